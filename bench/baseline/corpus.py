"""Documents of the job's sources, read the way Overlord's source pools read them.

A SourceStream yields one source's documents as token arrays with EOS
appended, epoch after epoch: the shards of each epoch in the seeded order
of planner/rng.hpp, records in file order. Reader rules follow
sources/reader.cpp under ``on_bad_input: skip``: malformed JSON lines,
records without a string text field, unreadable and oversize files are
skipped and counted, and so are empty documents, with the first few
logged. With ``worker_count`` > 1 a stream reads only its slice: shards
``worker, worker + worker_count, ...`` of the epoch's order, or every
``worker_count``-th record when the source has fewer shards than that.

``webdataset`` sources are tar shards of image-caption samples, read with
Python's tarfile and decoded with ``overlord.decode_image``, the C++
decoder of Overlord's loader.
NOTE: this reader groups members by key without Overlord's structural
checks for adjacent members and duplicates. It keeps samples that
Overlord drops as split_sample or duplicate_member, which the demo shards
do not have.
"""

import glob
import json
import logging
import os
import tarfile

import numpy as np

import overlord

import packing

log = logging.getLogger("baseline")

# Skips logged one by one per stream before only counting.
LOGGED_SKIPS = 5


def expand_paths(patterns):
    """Return the sorted files matched by a glob or a list of globs."""
    if isinstance(patterns, str):
        patterns = [patterns]
    files = set()
    for pattern in patterns:
        matched = glob.glob(pattern)
        if not matched:
            raise FileNotFoundError(f"no file matches {pattern}")
        files.update(matched)
    return sorted(files)


# Defaults of Overlord's webdataset source keys (docs/config.md).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class SourceStream:
    """One source as one worker reads it: endless epochs of its slice."""

    def __init__(self, index, spec, tokenizer, job, worker, worker_count):
        self.index = index
        self.name = spec["name"]
        self.format = spec["format"]
        self.text_field = spec.get("text_field", "text")
        self.caption_field = spec.get("caption_field", "caption")
        self.shards = expand_paths(spec["paths"])
        self.tokenizer = tokenizer
        self.seed = job["seed"]
        self.sequence_length = job["sequence_length"]
        self.max_document_bytes = job.get("max_document_bytes", 64 << 20)
        self.image_token_id = job.get("image_token_id", 50257)
        self.image_options = {
            "max_pixels": spec.get("image_max_pixels", 224 * 224),
            "patch_size": spec.get("patch_size", 14),
            "mean": tuple(spec.get("image_mean", CLIP_MEAN)),
            "std": tuple(spec.get("image_std", CLIP_STD)),
        }
        self.worker = worker
        self.worker_count = worker_count
        self.skipped = 0

    def skip(self, where, reason):
        self.skipped += 1
        if self.skipped <= LOGGED_SKIPS:
            log.warning("source=%s worker=%d skipped %s: %s", self.name, self.worker,
                        where, reason)

    def documents(self):
        """Yield (key, tokens with EOS appended, patches, image) forever.

        ``patches`` and ``image`` are 0 and None for text documents.
        """
        by_shard = len(self.shards) >= self.worker_count
        epoch = 0
        while True:
            kept = 0
            order = packing.epoch_shard_order(len(self.shards), self.seed, self.name, epoch)
            record = 0
            for position, shard_index in enumerate(order):
                if by_shard and position % self.worker_count != self.worker:
                    continue
                for key, content in self.read_shard(self.shards[shard_index]):
                    if not by_shard:
                        record += 1
                        if (record - 1) % self.worker_count != self.worker:
                            continue
                    if isinstance(content, dict):
                        document = self.encode_image_text(key, content)
                    else:
                        document = self.encode_text(key, content)
                    if document is None:
                        continue
                    kept += 1
                    yield (key,) + document
            if kept == 0:
                raise RuntimeError(f"source={self.name} worker={self.worker}: every record "
                                   f"of epoch {epoch} was skipped or empty")
            epoch += 1

    def encode_text(self, key, text):
        """Return (tokens with EOS, 0, None), or None for an empty document."""
        if not text.strip(b" \t\n\r\v\f"):
            self.skip(key, "document has no text")
            return None
        ids = self.tokenizer.encode(text)
        return np.append(ids, np.int32(self.tokenizer.eos_id)), 0, None

    def encode_image_text(self, key, sample):
        """Return (tokens, patches, image) of an image-text sample, or None.

        As in Overlord's loader, the document is ``patches`` positions of
        ``image_token_id``, the caption's tokens cut to fit one row, and EOS.
        """
        try:
            image = overlord.decode_image(sample["image"], key, **self.image_options)
        except overlord.InvalidInputError as error:
            self.skip(key, f"bad_image: {error}")
            return None
        patches = image["patches"]
        caption = self.tokenizer.encode(sample["caption"])
        room = self.sequence_length - patches - 1
        tokens = np.concatenate([
            np.full(patches, self.image_token_id, dtype=np.int32),
            caption[:room],
            np.asarray([self.tokenizer.eos_id], dtype=np.int32),
        ])
        return tokens, patches, image

    def read_shard(self, path):
        """Yield (key, raw bytes) per document of one shard, in file order."""
        shard = os.path.basename(path)
        try:
            if self.format == "text":
                if os.path.getsize(path) > self.max_document_bytes:
                    self.skip(shard, "file exceeds max_document_bytes")
                    return
                with open(path, "rb") as file:
                    yield shard, file.read()
            elif self.format == "jsonl":
                with open(path, "rb") as file:
                    yield from self.read_jsonl(shard, file)
            elif self.format == "webdataset":
                yield from self.read_webdataset(shard, path)
            else:
                raise ValueError(f"source={self.name}: unknown format {self.format}")
        except (OSError, tarfile.TarError) as error:
            self.skip(shard, f"unreadable file: {error}")

    def read_jsonl(self, shard, file):
        for line_number, line in enumerate(file, start=1):
            line = line.rstrip(b"\n").rstrip(b"\r")
            if not line.strip(b" \t"):
                continue
            where = f"{shard}:{line_number}"
            # surrogateescape passes invalid UTF-8 bytes through unchanged, so
            # the tokenizer receives the bytes Overlord's reader passes it.
            try:
                record = json.loads(line.decode("utf-8", "surrogateescape"))
            except ValueError as error:
                self.skip(where, f"malformed JSON: {error}")
                continue
            text = record.get(self.text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                self.skip(where, f"no string field '{self.text_field}'")
                continue
            try:
                raw = text.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                # RapidJSON rejects an escaped lone surrogate as malformed.
                self.skip(where, "malformed JSON: invalid surrogate escape")
                continue
            if len(raw) > self.max_document_bytes:
                self.skip(where, "document exceeds max_document_bytes")
                continue
            yield where, raw

    def read_webdataset(self, shard, path):
        """Yield (key, {"image": bytes, "caption": bytes}) per complete sample."""
        samples = {}
        order = []
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                # The sample key is the member name up to the first dot of
                # its base name, folder included, as in WebDataset.
                folder, _, base = member.name.rpartition("/")
                stem, _, extension = base.partition(".")
                stem = f"{folder}/{stem}" if folder else stem
                extension = extension.lower()
                if extension not in ("jpg", "jpeg", "png", "txt", "json"):
                    continue
                if stem not in samples:
                    samples[stem] = {}
                    order.append(stem)
                samples[stem][extension] = archive.extractfile(member).read()
        for stem in order:
            parts = samples[stem]
            image = parts.get("jpg") or parts.get("jpeg") or parts.get("png")
            caption = parts.get("txt")
            if caption is None and "json" in parts:
                try:
                    field = json.loads(parts["json"]).get(self.caption_field)
                except (ValueError, AttributeError) as error:
                    self.skip(f"{shard}:{stem}", f"bad_caption: {error}")
                    continue
                if not isinstance(field, str):
                    self.skip(f"{shard}:{stem}", f"bad_caption: no string field "
                                                 f"'{self.caption_field}'")
                    continue
                caption = field.encode("utf-8", "surrogateescape")
            if image is None or caption is None:
                self.skip(f"{shard}:{stem}", "missing_member: no image or no caption")
                continue
            yield f"{shard}:{stem}", {"image": image, "caption": caption}
