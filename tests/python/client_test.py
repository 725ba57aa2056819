"""Checks of the overlord Python client against a running overlordd.

tests/python_client_test.sh starts the daemons and runs this script twice:

- ``stream``: pulls 20 steps of both ranks (rank 0 by endpoint, rank 1 by
  planner lookup) from a job that served nothing yet, and checks digests
  against overlord_pull's, array layout, zero-copy views, packing rules,
  state_dict, errors and GIL release. Saves the state after step 9.
- ``resume``: on the job restarted with ``overlordd --resume`` at the
  saved step, loads that state into a new client and checks the batches
  that follow, including from two threads at once and through
  OverlordIterableDataset when torch is installed.

Prints ``N passed, M failed`` last and exits 1 when a check failed.
"""

import argparse
import builtins
import gc
import hashlib
import itertools
import json
import struct
import subprocess
import sys
import threading
import time
import traceback

import numpy as np

import overlord
from overlord import _overlord

EOS_ID = 50256
IGNORE_LABEL = -100
STEPS = 20
SAVED_AFTER = 9  # state saved after this step, resumed in the resume run


class Results:
    """Runs named checks and counts them."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, function, *args):
        try:
            function(*args)
        except Exception as error:  # a failed check, reported and counted
            self.failed += 1
            print(f"FAIL {name}: {type(error).__name__}: {error}", file=sys.stderr)
            traceback.print_exc(limit=3, file=sys.stderr)
        else:
            self.passed += 1
            print(f"ok   {name}")

    def skip(self, name, reason):
        print(f"skip {name}: {reason}")


def read_digests(path):
    with open(path) as lines:
        return [json.loads(line)["digest"] for line in lines]


def recompute_digest(batch):
    """Return transport::batch_digest recomputed from the Python view."""
    sha = hashlib.sha256()

    def value(fmt, number):
        sha.update(struct.pack("<" + fmt, number))

    def vector(array):
        value("Q", array.size)
        if array.size:
            sha.update(memoryview(np.ascontiguousarray(array)))

    def string(text):
        data = text.encode()
        value("Q", len(data))
        sha.update(data)

    value("Q", batch["step"])
    for key in ("rank", "rows", "sequence_length", "cp_size", "cp_rank"):
        value("I", batch[key])
    vector(np.array(batch["cp_chunks"], dtype="<u4"))
    value("I", batch["row_length"])
    for key in ("tokens", "labels", "loss_mask", "position_ids", "cu_seqlens",
                "row_splits"):
        vector(batch[key])
    for name in batch["source_names"]:
        string(name)
    for document in batch["documents"]:
        value("H", document["source_index"])
        string(document["key"])
        for key in ("epoch", "row", "row_offset", "length", "document_offset",
                    "document_tokens"):
            value("I", document[key])
    return sha.hexdigest()


def array_address(array):
    return array.__array_interface__["data"][0]


# ---- checks on the received batches ----

def check_digests(batches, reference, rank):
    got = [batch["digest"] for batch in batches]
    assert len(got) == len(reference) == STEPS, (
        f"rank {rank}: {len(got)} batches, {len(reference)} reference digests")
    for step, (mine, theirs) in enumerate(zip(got, reference)):
        assert mine == theirs, (
            f"rank {rank} step {step}: digest {mine} != overlord_pull's {theirs}")


def check_recomputed_digests(batches):
    for batch in batches:
        recomputed = recompute_digest(batch)
        assert recomputed == batch["digest"], (
            f"step {batch['step']}: digest recomputed from the arrays "
            f"{recomputed} != {batch['digest']}")


def check_plain_values(batches, rank):
    for step, batch in enumerate(batches):
        assert batch["step"] == step, f"batch {step} has step {batch['step']}"
        assert batch["rank"] == rank, f"step {step}: rank {batch['rank']}"
        assert batch["rows"] == 4, f"step {step}: rows {batch['rows']}"
        assert batch["sequence_length"] == 512, batch["sequence_length"]
        assert batch["row_length"] == 512, batch["row_length"]
        assert batch["cp_size"] == 1, batch["cp_size"]
        assert batch["cp_rank"] == 0, batch["cp_rank"]
        assert batch["pad_id"] == EOS_ID, batch["pad_id"]
        assert set(batch["source_names"]) == {"mail", "sotu", "moby"}
        assert len(batch["digest"]) == 64, batch["digest"]
        assert int(batch["digest"], 16) >= 0, batch["digest"]
        counters = batch["counters"]
        assert counters["tokens"] + counters["padding"] == 4 * 512, counters
        assert counters["tokens"] == sum(d["length"] for d in batch["documents"])
        assert counters["documents_started"] == sum(
            d["document_offset"] == 0 for d in batch["documents"])
        for document in batch["documents"]:
            assert set(document) == {
                "source", "source_index", "key", "epoch", "row", "row_offset",
                "length", "document_offset", "document_tokens"}, document
            assert document["source"] == batch["source_names"][document["source_index"]]
            assert document["key"], document


def check_shapes_and_dtypes(batches):
    expected = {"tokens": np.int32, "labels": np.int32, "loss_mask": np.uint8,
                "position_ids": np.int32, "cu_seqlens": np.int32,
                "row_splits": np.uint32}
    for batch in batches:
        for key, dtype in expected.items():
            assert batch[key].dtype == dtype, f"{key}: dtype {batch[key].dtype}"
        for key in ("tokens", "labels", "loss_mask", "position_ids"):
            assert batch[key].shape == (4, 512), f"{key}: shape {batch[key].shape}"
            assert batch[key].flags.c_contiguous, key
        assert batch["row_splits"].shape == (5,), batch["row_splits"].shape
        assert batch["cu_seqlens"].ndim == 1
        assert batch["cu_seqlens"].size == batch["row_splits"][-1]
        assert batch["row_splits"][0] == 0


def check_zero_copy(batches):
    for batch in batches:
        owner = batch["tokens"].base
        assert isinstance(owner, _overlord.BatchBuffer), f"base is {type(owner)}"
        message = np.frombuffer(owner, dtype=np.uint8)
        assert message.size == owner.size
        start = array_address(message)
        end = start + message.size
        for key in ("tokens", "labels", "loss_mask", "position_ids", "cu_seqlens",
                    "row_splits"):
            array = batch[key]
            assert not array.flags.owndata, f"{key} owns its data"
            assert array.base is owner, f"{key}: base {array.base!r} is not the batch's buffer"
            address = array_address(array)
            where = f"{key} at {address:#x}+{array.nbytes}, message {start:#x}..{end:#x}"
            assert start <= address, f"{where}: starts before the message"
            assert address + array.nbytes <= end, f"{where}: ends after the message"
            assert not array.flags.writeable, f"{key} is writeable"
        try:
            batch["tokens"][0, 0] = 1
        except ValueError:
            pass
        else:
            raise AssertionError("writing into tokens did not raise")


def check_packing(batches):
    """Checks labels, loss_mask, position_ids and cu_seqlens against the documents."""
    for batch in batches:
        step = batch["step"]
        tokens, labels = batch["tokens"], batch["labels"]
        mask, positions = batch["loss_mask"], batch["position_ids"]
        splits, bounds = batch["row_splits"], batch["cu_seqlens"]
        assert np.array_equal(mask == 1, labels != IGNORE_LABEL), (
            f"step {step}: loss_mask and labels != -100 disagree")
        for row in range(batch["rows"]):
            row_bounds = bounds[splits[row]:splits[row + 1]]
            pieces = sorted((d for d in batch["documents"] if d["row"] == row),
                            key=lambda d: d["row_offset"])
            starts = [d["row_offset"] for d in pieces]
            assert list(row_bounds[:-1]) == starts, (
                f"step {step} row {row}: cu_seqlens {list(row_bounds)} vs starts {starts}")
            used = int(row_bounds[-1])
            assert used == sum(d["length"] for d in pieces), f"step {step} row {row}"
            for piece in pieces:
                begin, length = piece["row_offset"], piece["length"]
                end = begin + length
                where = f"step {step} row {row} piece {piece['key']}@{begin}"
                assert np.array_equal(positions[row, begin:end], np.arange(length)), (
                    f"{where}: position_ids do not count from 0")
                assert np.array_equal(labels[row, begin:end - 1], tokens[row, begin + 1:end]), (
                    f"{where}: labels are not the next tokens")
                assert mask[row, begin:end - 1].all(), f"{where}: loss_mask 0 inside"
                ends_document = piece["document_offset"] + length == piece["document_tokens"]
                if ends_document:
                    assert tokens[row, end - 1] == EOS_ID, f"{where}: no EOS at the end"
                    assert labels[row, end - 1] == IGNORE_LABEL, f"{where}: EOS has a label"
                    assert mask[row, end - 1] == 0, f"{where}: loss_mask 1 on EOS"
                else:
                    assert mask[row, end - 1] == 1, f"{where}: split piece loses its last label"
            assert (tokens[row, used:] == batch["pad_id"]).all(), f"step {step} row {row}: padding"
            assert (labels[row, used:] == IGNORE_LABEL).all()
            assert (mask[row, used:] == 0).all()
            assert (positions[row, used:] == 0).all()


def check_arrays_outlive_client(batches, client):
    tokens = batches[3]["tokens"]
    digest = batches[3]["digest"]
    client.close()
    del client
    gc.collect()
    batch = dict(batches[3])
    assert batch["tokens"] is tokens
    assert recompute_digest(batch) == digest, "array memory changed after close"


# ---- client behaviour ----

def check_argument_errors():
    cases = [
        ({}, "exactly one"),
        ({"endpoint": "127.0.0.1:1", "planner": "127.0.0.1:2"}, "exactly one"),
        ({"endpoint": "127.0.0.1:1", "prefetch": 0}, "prefetch"),
        ({"endpoint": "127.0.0.1:1", "timeout": 0}, "timeout"),
        ({"endpoint": "127.0.0.1:1", "rank": -1}, "rank"),
        ({"endpoint": "127.0.0.1:1", "rank": True}, "rank"),
        ({"endpoint": ""}, "endpoint"),
        ({"planner": "no-port"}, "planner"),
    ]
    for options, text in cases:
        try:
            overlord.Client(**options)
        except ValueError as error:
            assert text in str(error), f"{options}: message {error!r} lacks {text!r}"
        else:
            raise AssertionError(f"Client({options}) did not raise ValueError")


def check_ready(client):
    # The client keeps `prefetch` (2) requests in flight, so at most two
    # batches can be waiting.
    ready = client.ready()
    assert isinstance(ready, int), type(ready)
    assert 0 <= ready <= 2, ready


def check_bad_state_dicts(client):
    before = client.state_dict()
    cases = [
        (None, "dict"),
        ([0, 0, 3], "dict"),
        ({"rank": 0, "cp_rank": 0}, "next_step"),
        ({"rank": 0, "cp_rank": 0, "next_step": 3, "epoch": 1}, "unknown keys"),
        ({"rank": 0, "cp_rank": 0, "next_step": -1}, "next_step"),
        ({"rank": 0, "cp_rank": 0, "next_step": "3"}, "next_step"),
        ({"rank": 0, "cp_rank": 0, "next_step": 2.5}, "next_step"),
        ({"rank": 0, "cp_rank": 0, "next_step": True}, "next_step"),
        ({"rank": 1, "cp_rank": 0, "next_step": 3}, "rank 1"),
        ({"rank": 0, "cp_rank": 2, "next_step": 3}, "cp_rank 2"),
    ]
    for state, text in cases:
        try:
            client.load_state_dict(state)
        except ValueError as error:
            assert text in str(error), f"{state!r}: message {error!r} lacks {text!r}"
        else:
            raise AssertionError(f"load_state_dict({state!r}) did not raise ValueError")
        assert client.state_dict() == before, f"state changed after {state!r}"


def check_served_step_not_found(endpoint):
    client = overlord.Client(endpoint=endpoint, rank=0, timeout=10)
    client.load_state_dict({"rank": 0, "cp_rank": 0, "next_step": 5})
    try:
        client.next()
    except overlord.NotFoundError as error:
        assert isinstance(error, overlord.OverlordError)
        assert isinstance(error, LookupError)
        assert error.code == "not_found", error.code
        assert "no longer holds step 5" in str(error), str(error)
    else:
        raise AssertionError("a step served already was served again")
    finally:
        client.close()


def check_timeout(free_port):
    """A client of a port without a server times out, and releases the GIL while waiting."""
    client = overlord.Client(endpoint=f"127.0.0.1:{free_port}", rank=3, timeout=1)
    outcome = {}

    def wait():
        started = time.monotonic()
        try:
            client.next()
        except Exception as error:  # stored for the checks below
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=wait)
    waiter.start()
    # This thread runs only while the waiter does not hold the GIL: with
    # the GIL held through the whole wait it would get a turn or two, not
    # dozens, however loaded the machine is.
    turns = 0
    deadline = time.monotonic() + 10
    while waiter.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
        turns += 1
    waiter.join(timeout=10)
    assert not waiter.is_alive(), "next() still waits after 10 s"

    error = outcome.get("error")
    assert error is not None, "next() returned a batch from a free port"
    assert isinstance(error, overlord.TimeoutError), f"raised {type(error).__name__}: {error}"
    assert isinstance(error, builtins.TimeoutError)
    assert isinstance(error, overlord.OverlordError)
    assert error.code == "timeout", error.code
    assert "rank 3" in str(error), str(error)
    assert f"127.0.0.1:{free_port}" in str(error), str(error)
    assert outcome["seconds"] >= 0.9, f"timed out early, after {outcome['seconds']:.2f} s"
    assert turns >= 20, f"the main thread ran {turns} times during the wait: GIL held"


def check_planner_errors(planner, free_port):
    started = time.monotonic()
    try:
        overlord.Client(planner=planner, rank=7, timeout=60)
    except overlord.InvalidInputError as error:
        assert "rank 7 does not exist" in str(error), str(error)
    else:
        raise AssertionError("rank 7 of a 2-rank job was found")
    # Retrying would take the whole 60 s timeout.
    assert time.monotonic() - started < 30, "an unknown rank was retried"

    # An unreachable planner is retried until the timeout.
    started = time.monotonic()
    try:
        overlord.Client(planner=f"127.0.0.1:{free_port}", rank=0, timeout=2)
    except overlord.UnavailableError as error:
        assert f"127.0.0.1:{free_port}" in str(error), str(error)
    else:
        raise AssertionError("a planner on a free port was reached")
    seconds = time.monotonic() - started
    assert seconds >= 1.9, f"gave up on the planner after {seconds:.2f} s"
    assert seconds < 30, f"still retried the planner after {seconds:.2f} s"


def check_torch_views(batch):
    import torch

    tensors = overlord.to_torch(batch)
    for key in ("tokens", "labels", "loss_mask", "position_ids", "cu_seqlens"):
        assert tensors[key].data_ptr() == array_address(batch[key]), f"{key} was copied"
        assert tuple(tensors[key].shape) == batch[key].shape
    assert tensors["tokens"].dtype == torch.int32
    assert tensors["row_splits"].dtype == torch.int64
    assert tensors["row_splits"].tolist() == batch["row_splits"].tolist()
    assert tensors["digest"] == batch["digest"]


# ---- runs ----

def pull_both_ranks(client0, client1, results):
    """Pulls STEPS batches of each rank in lock step; returns them and a saved state."""
    saved = None
    states_ok = True
    # Step 0 of both ranks from two threads at once: the first batches of a
    # process are converted concurrently (this used to deadlock).
    first = {}
    threads = [threading.Thread(target=lambda c=client, r=rank: first.update({r: c.next()}),
                                daemon=True)
               for rank, client in ((0, client0), (1, client1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert set(first) == {0, 1}, "the first batches did not arrive from two threads"
    batches0, batches1 = [first[0]], [first[1]]
    # The rest half through next(), half through the iterator protocol.
    for step in range(1, STEPS // 2):
        batches0.append(client0.next())
        batches1.append(client1.next())
        states_ok &= client0.state_dict() == {"rank": 0, "cp_rank": 0, "next_step": step + 1}
        if step == SAVED_AFTER:
            saved = client0.state_dict()
    for batch0, batch1 in itertools.islice(zip(client0, client1), STEPS - STEPS // 2):
        batches0.append(batch0)
        batches1.append(batch1)
        if batch0["step"] == SAVED_AFTER:
            saved = client0.state_dict()

    def check_states():
        assert states_ok, "state_dict()['next_step'] did not follow the steps"
        assert client0.state_dict() == {"rank": 0, "cp_rank": 0, "next_step": STEPS}
        assert client1.state_dict() == {"rank": 1, "cp_rank": 0, "next_step": STEPS}
        assert saved == {"rank": 0, "cp_rank": 0, "next_step": SAVED_AFTER + 1}, saved

    results.check("state_dict follows the batches", check_states)
    return batches0, batches1, saved


def run_stream(args, results):
    reference = [read_digests(args.reference_rank0), read_digests(args.reference_rank1)]
    endpoint0 = f"127.0.0.1:{args.base_port}"
    results.check("constructor argument errors", check_argument_errors)

    client0 = overlord.Client(endpoint=endpoint0, rank=0, timeout=60)
    client1 = overlord.Client(planner=args.planner, rank=1, timeout=60)
    assert client0.endpoint == f"tcp://{endpoint0}", client0.endpoint
    assert client1.endpoint == f"tcp://127.0.0.1:{args.base_port + 1}", client1.endpoint

    batches0, batches1, saved = pull_both_ranks(client0, client1, results)
    with open(args.state_file, "w") as out:
        json.dump(saved, out)

    for rank, batches in enumerate((batches0, batches1)):
        results.check(f"rank {rank} digests match overlord_pull", check_digests,
                      batches, reference[rank], rank)
        results.check(f"rank {rank} plain values", check_plain_values, batches, rank)
    all_batches = batches0 + batches1
    results.check("digests recomputed from arrays", check_recomputed_digests, all_batches)
    results.check("array shapes and dtypes", check_shapes_and_dtypes, all_batches)
    results.check("arrays view the message", check_zero_copy, all_batches)
    results.check("labels, loss_mask, positions, cu_seqlens", check_packing, all_batches)
    results.check("ready() counts arrived batches", check_ready, client0)
    results.check("bad state dicts raise ValueError", check_bad_state_dicts, client0)
    results.check("served step raises NotFoundError", check_served_step_not_found, endpoint0)
    results.check("timeout names the rank", check_timeout, args.free_port)
    results.check("planner lookup errors", check_planner_errors, args.planner, args.free_port)
    try:
        import torch  # noqa: F401
    except ImportError:
        results.skip("to_torch shares memory", "torch is not installed")
    else:
        results.check("to_torch shares memory", check_torch_views, batches0[0])
    client1.close()
    results.check("arrays outlive the client", check_arrays_outlive_client, batches0, client0)


def check_dataset(base_port, reference, first_step):
    import torch
    import torch.utils.data

    dataset = overlord.OverlordIterableDataset(
        endpoint=f"127.0.0.1:{base_port + 1}", rank=1, timeout=30)
    state = {"rank": 1, "cp_rank": 0, "next_step": first_step}
    dataset.load_state_dict(state)
    assert dataset.state_dict() == state, dataset.state_dict()
    try:
        dataset.load_state_dict({"rank": 0, "cp_rank": 0, "next_step": first_step})
    except ValueError:
        pass
    else:
        raise AssertionError("the dataset of rank 1 accepted a state of rank 0")

    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0)
    steps = (first_step, first_step + 1)
    for expected_step, batch in zip(steps, loader):
        assert batch["step"] == expected_step, batch["step"]
        assert batch["digest"] == reference[expected_step], f"step {expected_step}"
        assert isinstance(batch["tokens"], torch.Tensor), type(batch["tokens"])
        assert batch["tokens"].shape == (4, 512), batch["tokens"].shape
        assert batch["labels"].dtype == torch.int32, batch["labels"].dtype
    expected_state = {"rank": 1, "cp_rank": 0, "next_step": first_step + 2}
    assert dataset.state_dict() == expected_state, dataset.state_dict()


# Loads the saved state into a rank 0 client and starts rank 1 at the same
# step, then receives the first batch of each on two threads at once. The
# process imports nothing that loads NumPy before that, so both threads
# convert a batch while NumPy loads. faulthandler ends a deadlocked run
# with the threads' stacks.
RESUME_ON_TWO_THREADS = """
import faulthandler, json, sys, threading
faulthandler.dump_traceback_later(60, exit=True)
import overlord
port, state_file = int(sys.argv[1]), sys.argv[2]
with open(state_file) as saved:
    state = json.load(saved)
rank0 = overlord.Client(endpoint=f"127.0.0.1:{port}", rank=0, timeout=30)
rank0.load_state_dict(state)
rank1 = overlord.Client(endpoint=f"127.0.0.1:{port + 1}", rank=1, timeout=30,
                        first_step=state["next_step"])
received = {}
def pull(rank, client):
    batch = client.next()
    received[rank] = (batch["step"], batch["digest"])
threads = [threading.Thread(target=pull, args=(rank, client))
           for rank, client in ((0, rank0), (1, rank1))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps([received[0], received[1]]))
"""


def check_resume_on_two_threads(base_port, state_file, references, step):
    assert "numpy" not in RESUME_ON_TWO_THREADS
    done = subprocess.run(
        [sys.executable, "-c", RESUME_ON_TWO_THREADS, str(base_port), state_file],
        capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, (
        f"exit status {done.returncode}, stderr:\n{done.stderr[-3000:]}")
    received = json.loads(done.stdout)
    for rank in (0, 1):
        got_step, digest = received[rank]
        assert got_step == step, f"rank {rank}: step {got_step}, expected {step}"
        assert digest == references[rank][step], (
            f"rank {rank} step {step}: {digest} != overlord_pull's {references[rank][step]}")


def check_resume(base_port, reference, step):
    client = overlord.Client(endpoint=f"127.0.0.1:{base_port}", rank=0, timeout=60)
    state = {"rank": 0, "cp_rank": 0, "next_step": step}
    client.load_state_dict(state)
    assert client.state_dict() == state, client.state_dict()
    for expected_step in (step, step + 1):
        batch = client.next()
        assert batch["step"] == expected_step, batch["step"]
        assert batch["digest"] == reference[expected_step], (
            f"step {expected_step}: {batch['digest']} != {reference[expected_step]}")
    assert client.state_dict()["next_step"] == step + 2, client.state_dict()
    client.close()


def run_resume(args, results):
    """Checks a job resumed (overlordd --resume) at the saved step."""
    references = [read_digests(args.reference_rank0), read_digests(args.reference_rank1)]
    with open(args.state_file) as saved_file:
        saved_step = json.load(saved_file)["next_step"]

    # The subprocess receives (and prefetches) up to saved_step + 2 on both
    # ranks, and a constructor sends each step once, so the later checks
    # start after that.
    results.check("saved state resumes on two threads", check_resume_on_two_threads,
                  args.base_port, args.state_file, references, saved_step)
    results.check("load_state_dict skips ahead", check_resume, args.base_port,
                  references[0], saved_step + 3)
    try:
        import torch  # noqa: F401
    except ImportError:
        results.skip("iterable dataset resumes", "torch is not installed")
    else:
        results.check("iterable dataset resumes", check_dataset, args.base_port,
                      references[1], saved_step + 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("stream", "resume"))
    parser.add_argument("--base-port", type=int, required=True,
                        help="port of rank 0's constructor; rank 1 is on the next")
    parser.add_argument("--planner", help="planner HOST:PORT (stream run)")
    parser.add_argument("--free-port", type=int, help="a port nobody listens on")
    parser.add_argument("--reference-rank0", required=True,
                        help="overlord_pull output of rank 0, one JSON object a line")
    parser.add_argument("--reference-rank1", help="the same for rank 1 (stream run)")
    parser.add_argument("--state-file", required=True,
                        help="JSON state saved by the stream run, read by the resume run")
    args = parser.parse_args()

    results = Results()
    if args.mode == "stream":
        run_stream(args, results)
    else:
        run_resume(args, results)
    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
