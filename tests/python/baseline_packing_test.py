"""The baseline's Python packing (bench/baseline) against a running overlordd.

tests/baseline_packing_test.sh starts ``overlordd --role all`` on a job and
runs this script, which reads the same job with bench/baseline/corpus.py as
a single reader (every shard of each source, in Overlord's epoch order),
mixes and packs it with bench/baseline/packing.py for the job's global
rows, and compares every step with the batches of all ranks:

- the same rows, each with the same pieces (sample key, offset in the
  document, length) in the same order;
- for every row, the same tokens, labels, loss mask and position ids as
  lay_out_rows builds from the Python tokenizer's ids;
- for every image-text document, the same image position, patch count,
  uint8 pixels, mean and std as overlord.decode_image returns.

Prints ``N passed, M failed`` last and exits 1 when a check failed.
"""

import argparse
import collections
import sys
import traceback

import numpy as np
import yaml

import overlord

import corpus
import packing


def expect_equal(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def python_steps(job, tokenizer, steps):
    """Yield the packed global rows of each step, planned as step_planner does."""
    streams = [corpus.SourceStream(index, spec, tokenizer, job, 0, 1)
               for index, spec in enumerate(job["sources"])]
    documents = [stream.documents() for stream in streams]
    mixture = packing.Mixture([float(spec.get("weight", 1)) for spec in job["sources"]],
                              job["seed"])
    by_documents = job.get("mix_by", "tokens") == "documents"
    capacity = job["sequence_length"]
    rows = job["rows_per_rank"] * job["ranks"]
    carried = []
    for step in range(steps):
        fresh = []
        filled = sum(piece.length for piece in carried)
        pick = 0
        while filled < rows * capacity:
            source = mixture.pick(step, pick)
            pick += 1
            key, tokens, patches, image = next(documents[source])
            mixture.record(source, 1 if by_documents else len(tokens))
            fresh += packing.split_document(source, key, tokens, capacity, patches, image)
            filled += len(tokens)
        packed, carried = packing.pack_rows(carried, fresh, rows, capacity)
        yield packed


def row_signature(pieces):
    return tuple((piece.key, piece.offset, piece.length) for piece in pieces)


def batch_rows(batch):
    """Return each row of a batch as its signature, from batch["documents"]."""
    by_row = collections.defaultdict(list)
    for document in batch["documents"]:
        by_row[document["row"]].append(document)
    signatures = []
    for row in range(batch["rows"]):
        pieces = sorted(by_row[row], key=lambda document: document["row_offset"])
        signatures.append(tuple((piece["key"], piece["document_offset"], piece["length"])
                                for piece in pieces))
    return signatures


def compare_step(step, packed, batches, sequence_length, pad_id):
    expected = collections.Counter(row_signature(row) for row in packed)
    received = collections.Counter(
        signature for batch in batches for signature in batch_rows(batch))
    if expected != received:
        missing = list((expected - received).elements())[:2]
        extra = list((received - expected).elements())[:2]
        raise AssertionError(f"step {step}: rows differ; only in Python: {missing}; "
                             f"only in Overlord: {extra}")

    by_signature = {row_signature(row): row for row in packed}
    for batch in batches:
        for row, signature in enumerate(batch_rows(batch)):
            where = f"step {step} rank {batch['rank']} row {row}"
            arrays = packing.lay_out_rows([by_signature[signature]], sequence_length, pad_id)
            for name in ("tokens", "labels", "loss_mask", "position_ids"):
                if not np.array_equal(arrays[name][0], batch[name][row]):
                    raise AssertionError(f"{where}: {name} differ")
            received = [image for image in batch.get("images", ()) if image["row"] == row]
            expect_equal(len(received), len(arrays["images"]), f"{where}: image count")
            for got, built in zip(sorted(received, key=lambda image: image["row_offset"]),
                                  arrays["images"]):
                expect_equal(got["row_offset"], built["row_offset"], f"{where}: image offset")
                expect_equal(got["patches"], built["patches"], f"{where}: image patches")
                if not np.array_equal(got["pixels"], built["pixels"]):
                    raise AssertionError(f"{where}: pixels of the image at "
                                         f"{got['row_offset']} differ")
                expect_equal(tuple(got["mean"]), tuple(built["mean"]), f"{where}: image mean")
                expect_equal(tuple(got["std"]), tuple(built["std"]), f"{where}: image std")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the job file overlordd runs")
    parser.add_argument("--base-port", type=int, required=True)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    with open(args.config) as file:
        job = yaml.safe_load(file)
    tokenizer = overlord.Tokenizer(job["tokenizer"])
    clients = [overlord.Client(endpoint=f"127.0.0.1:{args.base_port + rank}", rank=rank,
                               timeout=60) for rank in range(job["ranks"])]
    passed = failed = 0
    for step, packed in enumerate(python_steps(job, tokenizer, args.steps)):
        batches = [client.next() for client in clients]
        try:
            for batch in batches:
                expect_equal(batch["step"], step, "step")
            compare_step(step, packed, batches, job["sequence_length"], tokenizer.eos_id)
        except Exception as error:  # a failed step, reported and counted
            failed += 1
            print(f"FAIL step {step}: {type(error).__name__}: {error}", file=sys.stderr)
            traceback.print_exc(limit=3, file=sys.stderr)
        else:
            passed += 1
            images = sum(1 for row in packed for piece in row
                         if piece.patches and piece.offset == 0)
            print(f"ok   step {step}: {sum(len(row) for row in packed)} pieces, "
                  f"{images} images in {len(packed)} rows")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
