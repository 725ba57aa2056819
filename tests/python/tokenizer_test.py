"""Checks of overlord.Tokenizer, the Python binding of the GPT-2 tokenizer.

tests/python_tokenizer_test.sh runs this script with the path of
overlord_tokenize, whose ids tests/tokenizer_parity.sh checks against
js-tiktoken, and the demo data folder. The binding must return the same ids
for every record of two mail shards and for three State of the Union
speeches, from one thread and from four threads at once.

Prints ``N passed, M failed`` last and exits 1 when a check failed.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import threading
import time
import traceback

import numpy as np

import overlord

EOS_ID = 50256
VOCAB_SIZE = 50257


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


def expect_equal(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def reference_ids(tool, vocab, files, jsonl_field=None):
    """Return one id list per document from overlord_tokenize."""
    command = [tool, "--vocab", vocab]
    if jsonl_field:
        command += ["--jsonl-field", jsonl_field]
    output = subprocess.run(command + files, check=True, capture_output=True,
                            timeout=120).stdout.decode()
    return [[int(token) for token in line.split()] for line in output.splitlines()]


def jsonl_texts(paths):
    """Return the text field of every non-blank line as raw UTF-8 bytes.

    surrogateescape keeps invalid UTF-8 bytes as they are in the file, so
    both tokenizers receive the same bytes.
    """
    texts = []
    for path in paths:
        with open(path, "rb") as lines:
            for line in lines:
                if not line.strip(b" \t\r\n"):
                    continue
                record = json.loads(line.decode("utf-8", "surrogateescape"))
                texts.append(record["text"].encode("utf-8", "surrogateescape"))
    return texts


def compare(tokenizer, texts, expected):
    expect_equal(len(texts), len(expected), "document count")
    for index, (text, ids) in enumerate(zip(texts, expected)):
        got = tokenizer.encode(text)
        if got.dtype != np.int32 or got.ndim != 1:
            raise AssertionError(f"document {index}: expected a 1-D int32 array, "
                                 f"got {got.dtype} with shape {got.shape}")
        if got.tolist() != ids:
            raise AssertionError(f"document {index}: ids differ from overlord_tokenize "
                                 f"({len(got)} against {len(ids)} ids)")


def check_threads(tokenizer, texts, expected):
    """Four threads encode every document at once and must agree."""
    failures = []

    def work(offset):
        for step in range(len(texts)):
            index = (step + offset) % len(texts)
            if tokenizer.encode(texts[index]).tolist() != expected[index]:
                failures.append(index)

    threads = [threading.Thread(target=work, args=(offset * 7,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    expect_equal([thread.is_alive() for thread in threads], [False] * 4, "threads finished")
    expect_equal(failures, [], "documents whose ids differ under threads")


def check_gil_released(tokenizer):
    """A Python thread keeps running while another thread encodes 8 MB."""
    text = b"the whale, the whale! " * 400_000
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    started = time.perf_counter()
    tokenizer.encode(text)
    finished = time.perf_counter()
    stop.set()
    counter.join(timeout=10)
    during = [tick for tick in ticks if started < tick < finished]
    # With the GIL held, the counter thread could not run at all while
    # encode ran, whatever the machine's speed.
    if finished - started > 0.05 and len(during) < 2:
        raise AssertionError(f"the counter ran {len(during)} times during "
                             f"{finished - started:.3f} s of encoding")


def check_basics(tokenizer):
    expect_equal(tokenizer.eos_id, EOS_ID, "eos_id")
    expect_equal(tokenizer.vocab_size, VOCAB_SIZE, "vocab_size")
    expect_equal(tokenizer.encode("Hello world").tolist(), [15496, 995], "ids of 'Hello world'")
    expect_equal(tokenizer.encode(b"Hello world").tolist(), [15496, 995], "ids of b'Hello world'")
    expect_equal(tokenizer.encode("").tolist(), [], "ids of ''")
    # "<|endoftext|>" in text is ordinary text, never the EOS id.
    if EOS_ID in tokenizer.encode("<|endoftext|>").tolist():
        raise AssertionError("'<|endoftext|>' in text was encoded as the EOS id")
    # An invalid byte decodes to U+FFFD, like the str with that character.
    expect_equal(tokenizer.encode(b"a\xffb").tolist(), tokenizer.encode("a\ufffdb").tolist(),
                 "ids of invalid UTF-8")


def check_errors(vocab):
    tokenizer = overlord.Tokenizer(vocab)
    try:
        tokenizer.encode(42)
    except TypeError as error:
        if "str or bytes" not in str(error):
            raise AssertionError(f"unexpected message: {error}")
    else:
        raise AssertionError("encode(42) did not raise TypeError")
    try:
        tokenizer.encode("\ud800")
    except UnicodeEncodeError:
        pass
    else:
        raise AssertionError("a lone surrogate did not raise UnicodeEncodeError")
    try:
        overlord.Tokenizer(os.path.join(vocab, "missing"))
    except overlord.NotFoundError as error:
        if "encoder.json" not in str(error):
            raise AssertionError(f"message names no file: {error}")
    else:
        raise AssertionError("a missing directory did not raise NotFoundError")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenize", required=True, help="path of overlord_tokenize")
    parser.add_argument("--data", required=True, help="demo data folder")
    args = parser.parse_args()

    vocab = os.path.join(args.data, "gpt2")
    tokenizer = overlord.Tokenizer(vocab)
    mail = sorted(glob.glob(os.path.join(args.data, "mail", "*.jsonl")))[:2]
    speeches = sorted(glob.glob(os.path.join(args.data, "sotu", "*.txt")))[:3]
    mail_texts = jsonl_texts(mail)
    mail_ids = reference_ids(args.tokenize, vocab, mail, "text")
    speech_texts = [open(path, "rb").read() for path in speeches]
    speech_ids = reference_ids(args.tokenize, vocab, speeches)

    results = Results()
    results.check("basics", check_basics, tokenizer)
    results.check("mail records equal overlord_tokenize", compare, tokenizer, mail_texts, mail_ids)
    results.check("speeches equal overlord_tokenize", compare, tokenizer, speech_texts, speech_ids)
    results.check("four threads agree", check_threads, tokenizer,
                  mail_texts + speech_texts, mail_ids + speech_ids)
    results.check("encode releases the GIL", check_gil_released, tokenizer)
    results.check("errors", check_errors, vocab)
    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
