"""Explains the waits of one bench/stall run from the daemon's debug log.

Usage: stall_waits.py TRAINER_OUTPUT DAEMON_LOG THRESHOLD_MS

TRAINER_OUTPUT contains stall_trainer's per-step lines, DAEMON_LOG the log of
an overlordd run with --log-level debug. For each step after the first
whose data wait exceeds THRESHOLD_MS, prints three times per waiting
rank: when the planner planned the step, when the rank's constructor
finished building it, and when the constructor handed it to ZeroMQ.
Each is in ms from the moment the trainer requested the step by calling
next(); the client's prefetch sent its request to the constructor
earlier. Each wait is then named by the stage that was late:

  supply    The step was planned after the request, because the pools
            had not yet delivered its documents.
  build     The step was planned before the request but built after it.
  request   The batch was built before the request but handed over after
            it, so the client's prefetch request reached the constructor
            late.
  delivery  The batch was handed over before the request. The time went
            to the transfer or to the trainer process.

With several context-parallel slices per rank, the latest slice's sent
line counts. The bench runs one slice per rank.

Text log timestamps are local time, as the daemon wrote them, so run this
in the daemon's time zone.
"""

import datetime
import math
import re
import sys

STEP = re.compile(
    r"step (\d+) wait_ms ([\d.]+) images \d+ requested_at_ms (.*) "
    r"wall_wait_ms (.*) run_queue_ms (.*)")
PLANNED = re.compile(r"(\S+) \w+ \[planner\] step=(\d+) planned")
BUILT = re.compile(r"(\S+) debug \[actors\] rank=(\d+) step=(\d+) built")
SENT = re.compile(
    r"(\S+) debug \[actors\] rank=(\d+) step=(\d+)(?: cp_rank=\d+)? sent")


def epoch_ms(stamp):
    return datetime.datetime.fromisoformat(stamp).timestamp() * 1000


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    trainer, log, threshold = argv[1], argv[2], float(argv[3])
    planned, built, sent = {}, {}, {}
    with open(log) as lines:
        for line in lines:
            if m := PLANNED.match(line):
                planned[int(m[2])] = epoch_ms(m[1])
            elif m := BUILT.match(line):
                built[(int(m[2]), int(m[3]))] = epoch_ms(m[1])
            elif m := SENT.match(line):
                key = (int(m[2]), int(m[3]))
                sent[key] = max(sent.get(key, 0.0), epoch_ms(m[1]))
    if not sent:
        print("no 'sent' lines in the daemon log: run with "
              "OVERLORDD_FLAGS='--log-level debug' to explain waits")
        return
    causes = {"supply": 0, "build": 0, "request": 0, "delivery": 0}
    with open(trainer) as lines:
        for line in lines:
            m = STEP.match(line)
            if not m or int(m[1]) == 0 or float(m[2]) <= threshold:
                continue
            step = int(m[1])
            requested = [float(x) for x in m[3].split()]
            wall = [float(x) for x in m[4].split()]
            queued = [max(0.0, float(x)) for x in m[5].split()]
            if not len(requested) == len(wall) == len(queued):
                print(f"step {step}: the trainer line has unequal rank counts")
                continue
            step_cause, longest = None, 0.0
            for rank, need in enumerate(requested):
                data_wait = wall[rank] - queued[rank]
                if data_wait <= threshold:
                    continue
                key = (rank, step)
                if key not in sent or step not in planned:
                    print(f"step {step} rank {rank}: waited {wall[rank]:.1f} ms, "
                          "but its planned or sent line is missing from the log")
                    continue
                at_plan = planned[step] - need
                at_build = built.get(key, float("nan")) - need
                at_send = sent[key] - need
                if at_send <= 0:
                    cause = "delivery"
                elif at_plan > 0:
                    cause = "supply"
                elif math.isnan(at_build) or at_build > 0:
                    cause = "build"
                else:
                    cause = "request"
                # A step counts once, by the cause of its longest data wait.
                if data_wait > longest:
                    step_cause, longest = cause, data_wait
                print(f"step {step} rank {rank}: waited {wall[rank]:.1f} ms "
                      f"({queued[rank]:.1f} ms of it without a core); planned "
                      f"{at_plan:+.0f} ms, built {at_build:+.0f} ms, handed over "
                      f"{at_send:+.0f} ms from the request: {cause}")
            if step_cause:
                causes[step_cause] += 1
    print("steps that waited, by cause: " +
          ", ".join(f"{name} {count}" for name, count in causes.items()))


if __name__ == "__main__":
    main(sys.argv)
