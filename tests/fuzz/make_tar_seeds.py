#!/usr/bin/env python3
"""Writes WebDataset tar shards as seeds for the tar_reader fuzz target.

Usage: make_tar_seeds.py OUT_DIR

The images are real 4x4 RGB PNG files, and most archives are POSIX ustar,
which libarchive and GNU tar read. One shard is valid. The others have
defects that the reader reports: a sample without a caption, a sample
split by another key's member, and an archive cut inside a member. Two
more shards use pax and GNU headers for long names, so that the fuzzer
starts from the extension headers that precede a member.
"""

import io
import json
import struct
import sys
import tarfile
import zlib
from pathlib import Path


def png(width: int, height: int, seed: int) -> bytes:
    """Returns a width x height 8-bit RGB PNG file."""
    rows = b"".join(
        b"\x00" + bytes((seed + x * 40 + y * 7) % 256 for x in range(width * 3))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def shard(members: list, format: int = tarfile.USTAR_FORMAT) -> bytes:
    """Returns a tar archive of (name, bytes) members in order.

    The archive ends with the two zero blocks that mark its end. tarfile's
    padding to a 10 KiB record after them is cut to keep seeds small.
    """
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
        end = tar.offset
    return out.getvalue()[: end + 2 * tarfile.BLOCKSIZE]


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    caption = json.dumps({"caption": "a small gradient", "id": 2}).encode()
    good = [
        ("sample-000.png", png(4, 4, 1)),
        ("sample-000.txt", b"a red and green square"),
        ("dir/sample-001.png", png(4, 4, 2)),
        ("dir/sample-001.json", caption),
    ]
    (out / "valid_shard.tar").write_bytes(shard(good))
    (out / "missing_caption.tar").write_bytes(shard(good[:1] + good[2:]))
    split = [good[0], good[2], good[1], good[3]]
    (out / "split_sample.tar").write_bytes(shard(split))
    whole = shard(good)
    (out / "truncated_member.tar").write_bytes(whole[:700])
    # The third header (sample-001.png) with a checksum that does not match.
    damaged = bytearray(whole)
    third = whole.index(b"dir/sample-001.png")
    damaged[third + 148] ^= 0x01
    (out / "bad_checksum.tar").write_bytes(bytes(damaged))
    folder = "long-folder-name-" * 8
    long_names = [(folder + "/" + name, data) for name, data in good]
    (out / "pax_long_names.tar").write_bytes(shard(long_names, tarfile.PAX_FORMAT))
    (out / "gnu_long_names.tar").write_bytes(shard(long_names, tarfile.GNU_FORMAT))


if __name__ == "__main__":
    main()
