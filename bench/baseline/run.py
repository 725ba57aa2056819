"""Overlord against one PyTorch DataLoader per rank, measured in one run.

For each rank count R, three loading fleets serve the same job (the
quickstart's sources, tokenizer, packing and mixture weights) to R
simulated trainer processes:

- ``baseline``: every rank builds a DataLoader with ``--workers`` worker
  processes, and each worker opens every source (torch_loader.py);
- ``overlord_all``: one ``overlordd --role all`` process;
- ``overlord_cluster``: ``overlordd`` planner, loader and constructor
  processes.

A simulated trainer takes its batch and sleeps for the modelled cost of
the batch's pieces, ``a*l + b*l^2`` per piece. The cost is scaled so that
``--step-ms`` is the time of rows full of tokens at the linear cost alone.
The trainer then waits at a barrier for every rank, as synchronous
data-parallel training does.

Memory is the sum of PSS (/proc/PID/smaps_rollup) over the loading fleet,
sampled every 0.25 s while the measured steps run. The fleet is:

- baseline: every process below a rank process (the DataLoader workers),
  in full, plus each rank process's loader share;
- Overlord: every overlordd process, in full, plus each trainer process's
  loader share (the client).

A trainer process's loader share is the growth of its RSS since just
before it built its loader (DataLoader or overlord.Client). Both sides
import the same modules (torch, numpy, overlord) before that point.

Prints a table and, last, one JSON line.
"""

import argparse
import json
import logging
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DESIGNS = ("baseline", "overlord_all", "overlord_cluster")

# Every wait of a run is bounded: a trainer gives up on a batch or the
# barrier after this long, and the driver stops a run after RUN_TIMEOUT_S.
WAIT_TIMEOUT_S = 120
RUN_TIMEOUT_S = 600


# ---------------------------------------------------------------- the job

def resolve_path(path, config_folder, data_dir):
    """Resolve a path of examples/quickstart.yaml, with the demo data in ``data_dir``."""
    demo_prefix = "../data/demo/"
    if path.startswith(demo_prefix):
        return os.path.join(data_dir, path[len(demo_prefix):])
    return os.path.normpath(os.path.join(config_folder, path))


def load_job(config_path, data_dir, args):
    """Return the job both sides run: the quickstart config with bench settings."""
    with open(config_path) as file:
        config = yaml.safe_load(file)
    folder = os.path.dirname(os.path.abspath(config_path))
    sources = []
    for spec in config["sources"]:
        spec = dict(spec)
        paths = spec["paths"] if isinstance(spec["paths"], list) else [spec["paths"]]
        spec["paths"] = [resolve_path(path, folder, data_dir) for path in paths]
        sources.append(spec)
    job = {
        "seed": config.get("seed", 0),
        "sequence_length": config["sequence_length"],
        "rows_per_rank": config.get("rows_per_rank", 1),
        "mix_by": config.get("mix_by", "tokens"),
        "on_bad_input": config.get("on_bad_input", "skip"),
        "tokenizer": resolve_path(config["tokenizer"], folder, data_dir),
        "plan_ahead": config.get("plan_ahead", 4),
        "buffer_documents": config.get("buffer_documents", 1024),
        "max_document_bytes": config.get("max_document_bytes", 64 << 20),
        "linear": args.linear,
        "quadratic": args.quadratic,
        "sources": sources,
    }
    if job["mix_by"] != "tokens":
        raise SystemExit(f"{config_path}: the baseline mixes by tokens only, "
                         f"but mix_by is {job['mix_by']}")
    return job


IMAGE_KEYS = ("caption_field", "image_max_pixels", "patch_size", "image_mean", "image_std")
# Keys that only Overlord's job file takes; the baseline has no such setting.
OVERLORD_ONLY_KEYS = ("buffer_bytes",)


def add_image_source(job, config_path, data_dir, weight):
    """Add the image-text source of ``config_path`` to ``job`` with ``weight``."""
    with open(config_path) as file:
        config = yaml.safe_load(file)
    folder = os.path.dirname(os.path.abspath(config_path))
    specs = [spec for spec in config["sources"] if spec["format"] == "webdataset"]
    if not specs:
        raise SystemExit(f"{config_path} has no webdataset source")
    spec = dict(specs[0])
    paths = spec["paths"] if isinstance(spec["paths"], list) else [spec["paths"]]
    spec["paths"] = [resolve_path(path, folder, data_dir) for path in paths]
    spec["weight"] = weight
    job["sources"].append(spec)
    job["image_token_id"] = config.get("image_token_id", 50257)


def overlord_config(job, ranks, base_port, planner_port):
    """Return the overlordd job file of ``job`` for ``ranks`` ranks."""
    sources = []
    for spec in job["sources"]:
        entry = {key: spec[key] for key in ("name", "format", "paths", "weight", "workers")
                 if key in spec}
        for key in ("text_field",) + IMAGE_KEYS:
            if key in spec:
                entry[key] = spec[key]
        sources.append(entry)
    config = {
        "seed": job["seed"],
        "sequence_length": job["sequence_length"],
        "rows_per_rank": job["rows_per_rank"],
        "ranks": ranks,
        "bind": "127.0.0.1",
        "base_port": base_port,
        "planner_port": planner_port,
        "on_bad_input": job["on_bad_input"],
        "mix_by": job["mix_by"],
        "tokenizer": job["tokenizer"],
        "plan_ahead": job["plan_ahead"],
        "buffer_documents": job["buffer_documents"],
        "max_document_bytes": job["max_document_bytes"],
        "cost_model": {"attention": "document", "linear": job["linear"],
                       "quadratic": job["quadratic"]},
        "sources": sources,
    }
    if "image_token_id" in job:
        config["image_token_id"] = job["image_token_id"]
    for key in OVERLORD_ONLY_KEYS:
        if key in job:
            config[key] = job[key]
    return config


# ---------------------------------------------------------------- /proc

def read_rollup(pid):
    """Return {"Pss": kB, "Rss": kB} of a process, or None once it is gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            for line in file:
                name, _, rest = line.partition(":")
                if name in ("Pss", "Rss"):
                    values[name] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return values


def descendants(pid):
    """Return the ids of every process below ``pid``."""
    found = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as file:
                    children = [int(child) for child in file.read().split()]
            except FileNotFoundError:
                continue
            found += children
            pending += children
    return found


def current_rss_kb():
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- trainers

def trainer_main(design, rank, ranks, settings, barrier, messages):
    """Run one simulated trainer rank and report its steps to the driver."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {design} rank={rank} %(levelname)s %(message)s")
    sys.path.insert(0, HERE)
    # Both designs import the same modules before the RSS mark.
    import numpy as np  # noqa: F401
    import torch  # noqa: F401

    import overlord
    import packing
    import torch_loader

    job = settings["job"]
    rows = job["rows_per_rank"]
    length = job["sequence_length"]
    seconds_per_cost = settings["step_ms"] / 1000.0 / (rows * length * job["linear"])
    messages.put(("mark", rank, os.getpid(), current_rss_kb()))

    if design == "baseline":
        batches = iter(torch_loader.make_loader(job, rank, ranks, settings["workers"]))

        def fetch():
            batch = next(batches)
            return (batch["tokens"].shape, batch["cu_seqlens"].numpy(),
                    batch["row_splits"].numpy(), len(batch["images"]))
    else:
        if design == "overlord_all":
            client = overlord.Client(endpoint=f"127.0.0.1:{settings['base_port'] + rank}",
                                     rank=rank, timeout=WAIT_TIMEOUT_S)
        else:
            client = overlord.Client(planner=f"127.0.0.1:{settings['planner_port']}",
                                     rank=rank, timeout=WAIT_TIMEOUT_S)

        def fetch():
            batch = client.next()
            # The trainer normalises the 8-bit pixels, which the baseline's
            # workers hand over as float32 already.
            images = [overlord.normalise_image(image["pixels"], image["mean"], image["std"])
                      for image in batch.get("images", ())]
            return (batch["tokens"].shape, batch["cu_seqlens"], batch["row_splits"],
                    len(images))

    warmup = settings["warmup"]
    records = []
    started = None
    for step in range(warmup + settings["steps"]):
        if step == warmup:
            barrier.wait(timeout=WAIT_TIMEOUT_S)
            messages.put(("measuring", rank))
            started = time.perf_counter()
        begin = time.perf_counter()
        begin_cpu = time.thread_time()
        shape, cu_seqlens, row_splits, images = fetch()
        wait = time.perf_counter() - begin
        fetch_cpu = time.thread_time() - begin_cpu
        if tuple(shape) != (rows, length):
            raise RuntimeError(f"rank={rank} step={step}: batch shape {tuple(shape)}, "
                               f"expected ({rows}, {length})")
        lengths = packing.piece_lengths(cu_seqlens, row_splits)
        cost = sum(packing.piece_cost(piece, job["linear"], job["quadratic"])
                   for piece in lengths)
        compute = cost * seconds_per_cost
        time.sleep(compute)
        barrier.wait(timeout=WAIT_TIMEOUT_S)
        if step >= warmup:
            records.append((step, cost, sum(lengths), wait, compute, fetch_cpu, images))
    finished = time.perf_counter()
    messages.put(("done", rank, records, started, finished))


# ---------------------------------------------------------------- fleets

def free_base_port(count):
    """Return P such that ports P .. P+count-1 are free on 127.0.0.1 now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"found no {count} consecutive free ports on 127.0.0.1")


class Fleet:
    """The overlordd processes of one run; stops them on exit."""

    def __init__(self, overlordd, design, config_path, planner_port, work):
        self.processes = []
        self.logs = []
        commands = []
        if design == "overlord_all":
            commands.append(("all", [overlordd, "--role", "all", "--config", config_path]))
        else:
            planner = f"127.0.0.1:{planner_port}"
            commands.append(("planner", [overlordd, "--role", "planner", "--config", config_path,
                                         "--set", "loader_nodes=1",
                                         "--set", "constructor_nodes=1"]))
            commands.append(("loader", [overlordd, "--role", "loader", "--planner", planner,
                                        "--node-id", "loader-1"]))
            commands.append(("constructor", [overlordd, "--role", "constructor",
                                             "--planner", planner,
                                             "--node-id", "constructor-1"]))
        for name, command in commands:
            log_path = os.path.join(work, f"{design}.{name}.log")
            log = open(log_path, "w")
            self.logs.append((log_path, log))
            self.processes.append(subprocess.Popen(command, stdout=log, stderr=log))
            if name == "planner":
                wait_for_port(planner_port, self.processes[-1], log_path)

    def pids(self):
        return [process.pid for process in self.processes]

    def check(self):
        for process, (log_path, _) in zip(self.processes, self.logs):
            if process.poll() is not None:
                raise RuntimeError(f"overlordd exited with {process.returncode}; "
                                   f"see {log_path}")

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
        for _, log in self.logs:
            log.close()


def wait_for_port(port, process, log_path):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"overlordd exited with {process.returncode}; see {log_path}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the planner did not listen on 127.0.0.1:{port} within 30 s; "
                       f"see {log_path}")


# ---------------------------------------------------------------- one run

def cpu_seconds(pid):
    """Return the user plus system CPU time of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted from 1.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample_fleet(fleet_pids, trainer_marks, cpu):
    """Return the fleet's PSS in kB now as (total, whole processes, trainer shares).

    Also records in ``cpu`` the first and last CPU time seen of every
    process counted in full.
    """
    whole = list(fleet_pids)
    for pid in trainer_marks:
        whole += descendants(pid)
    full = 0
    for pid in whole:
        rollup = read_rollup(pid)
        if rollup:
            full += rollup["Pss"]
        seconds = cpu_seconds(pid)
        if seconds is not None:
            cpu.setdefault(pid, [seconds, seconds])[1] = seconds
    share = 0
    for pid, rss_mark in trainer_marks.items():
        rollup = read_rollup(pid)
        if rollup:
            share += max(0, rollup["Rss"] - rss_mark)
    return full + share, full, share


def run_design(design, ranks, job, args, work):
    """Run one fleet with ``ranks`` simulated trainers; return its figures."""
    context = multiprocessing.get_context("spawn")
    base_port = free_base_port(ranks)
    planner_port = free_base_port(1) if design == "overlord_cluster" else 0
    settings = {"job": job, "steps": args.steps, "warmup": args.warmup,
                "step_ms": args.step_ms, "workers": args.workers,
                "base_port": base_port, "planner_port": planner_port}

    fleet = None
    if design != "baseline":
        config_path = os.path.join(work, f"{design}.r{ranks}.yaml")
        with open(config_path, "w") as file:
            yaml.safe_dump(overlord_config(job, ranks, base_port, planner_port), file)
        fleet = Fleet(args.overlordd, design, config_path, planner_port, work)

    barrier = context.Barrier(ranks)
    messages = context.Queue()
    trainers = [context.Process(target=trainer_main,
                                args=(design, rank, ranks, settings, barrier, messages))
                for rank in range(ranks)]
    marks = {}
    measuring = set()
    done = {}
    samples = []
    sample_times = []
    cpu = {}
    try:
        for trainer in trainers:
            trainer.start()
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while len(done) < ranks:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{design} R={ranks}: no result within {RUN_TIMEOUT_S} s")
            try:
                message = messages.get(timeout=0.25)
            except queue.Empty:
                message = None
            if message and message[0] == "mark":
                marks[message[2]] = message[3]
            elif message and message[0] == "measuring":
                measuring.add(message[1])
            elif message and message[0] == "done":
                done[message[1]] = message[2:]
            for trainer in trainers:
                if trainer.exitcode not in (None, 0):
                    raise RuntimeError(f"{design} R={ranks}: trainer exited with "
                                       f"{trainer.exitcode}")
            if fleet:
                fleet.check()
            if len(measuring) == ranks and len(done) == 0:
                fleet_pids = fleet.pids() if fleet else []
                samples.append(sample_fleet(fleet_pids, marks, cpu))
                sample_times.append(time.monotonic())
        for trainer in trainers:
            trainer.join(timeout=30)
    finally:
        for trainer in trainers:
            if trainer.is_alive():
                trainer.terminate()
                trainer.join(timeout=10)
        if fleet:
            fleet.stop()
    fleet_cpu = sum(last - first for first, last in cpu.values())
    window = sample_times[-1] - sample_times[0] if len(sample_times) > 1 else 0
    fleet_cores = fleet_cpu / window if window > 0 else 0
    return summarize(design, ranks, job, done, samples, fleet_cores)


def summarize(design, ranks, job, done, samples, fleet_cores):
    """Return the figures of one run from the trainers' step records."""
    steps = [done[rank][0] for rank in range(ranks)]
    started = min(done[rank][1] for rank in range(ranks))
    finished = max(done[rank][2] for rank in range(ranks))
    seconds = finished - started
    tokens = sum(record[2] for rank_steps in steps for record in rank_steps)
    step_count = len(steps[0])

    imbalances = []
    synchronous = []
    waits = []
    for index in range(step_count):
        costs = [steps[rank][index][1] for rank in range(ranks)]
        imbalances.append(max(costs) / (sum(costs) / ranks))
        synchronous.append(max(steps[rank][index][4] for rank in range(ranks)))
        waits.append(max(steps[rank][index][3] for rank in range(ranks)))

    fetch_cpu = sum(record[5] for rank_steps in steps for record in rank_steps)
    images = sum(record[6] for rank_steps in steps for record in rank_steps)
    capacity = step_count * ranks * job["rows_per_rank"] * job["sequence_length"]
    if not samples:
        raise RuntimeError(f"{design} R={ranks}: no memory sample was taken; "
                           "raise --steps")
    peak = max(samples, key=lambda sample: sample[0])
    mean_step = sum(synchronous) / step_count

    return {
        "design": design,
        "ranks": ranks,
        "pss_peak_mb": round(peak[0] / 1024, 1),
        "pss_mean_mb": round(sum(sample[0] for sample in samples) / len(samples) / 1024, 1),
        "pss_processes_mb": round(peak[1] / 1024, 1),
        "pss_trainer_share_mb": round(peak[2] / 1024, 1),
        "memory_samples": len(samples),
        "tokens_per_s": round(tokens / seconds),
        "seconds": round(seconds, 3),
        "steps": step_count,
        "padding_fraction": round(1 - tokens / capacity, 4),
        "imbalance_mean": round(sum(imbalances) / step_count, 4),
        "imbalance_max": round(max(imbalances), 4),
        "simulated_step_ms": round(mean_step * 1000, 2),
        "simulated_tokens_per_s": round(tokens / (mean_step * step_count)),
        "data_wait_ms": round(sum(waits) / step_count * 1000, 2),
        # Cores used by the processes counted in full, on average between
        # the first and the last memory sample.
        "fleet_cores": round(fleet_cores, 2),
        # CPU time the trainer's own thread spent taking a batch, per rank
        # and step: unpickling and rebuilding tensors for a DataLoader,
        # receiving and viewing the message for overlord.Client.
        "trainer_fetch_cpu_ms": round(fetch_cpu / (step_count * ranks) * 1000, 3),
        "images": images,
    }


# ---------------------------------------------------------------- report

def plot(results, rank_counts, path):
    """Draw fleet memory and delivered tokens/s against ranks for every design."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"baseline": "DataLoader per rank (2 workers each)",
              "overlord_all": "Overlord, overlordd --role all",
              "overlord_cluster": "Overlord, planner + loader + constructor"}
    figure, (memory, throughput) = plt.subplots(1, 2, figsize=(11, 4.4))
    for design in DESIGNS:
        rows = [results[(design, ranks)] for ranks in rank_counts]
        memory.plot(rank_counts, [row["pss_peak_mb"] for row in rows], marker="o",
                    label=labels[design])
        throughput.plot(rank_counts, [row["tokens_per_s"] / 1e3 for row in rows],
                        marker="o", label=labels[design])
    for ranks in rank_counts:
        ratio = (results[("baseline", ranks)]["pss_peak_mb"] /
                 results[("overlord_all", ranks)]["pss_peak_mb"])
        memory.annotate(f"{ratio:.1f}x", (ranks, results[("baseline", ranks)]["pss_peak_mb"]),
                        textcoords="offset points", xytext=(-12, 8), fontsize=8)
    memory.set_title("Loading fleet memory (sum of PSS, peak)")
    memory.set_ylabel("MB")
    throughput.set_title("Delivered tokens/s, simulated synchronous steps")
    throughput.set_ylabel("thousand tokens/s")
    for axes in (memory, throughput):
        axes.set_xlabel("simulated ranks")
        axes.set_xticks(rank_counts)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
    memory.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlordd", required=True, help="path of the overlordd binary")
    parser.add_argument("--data", required=True, help="demo data folder (OVERLORD_DATA_DIR)")
    parser.add_argument("--config", default=os.path.join(REPO, "examples", "quickstart.yaml"),
                        help="job whose sources, tokenizer and packing both sides use")
    parser.add_argument("--ranks", default="2,4,8", help="comma-separated rank counts")
    parser.add_argument("--steps", type=int, default=60, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="steps before measuring")
    parser.add_argument("--step-ms", type=float, default=50.0,
                        help="simulated step time in ms of one rank's rows full of tokens "
                             "at the linear cost alone")
    parser.add_argument("--linear", type=float, default=1.0, help="cost per token (a)")
    parser.add_argument("--quadratic", type=float, default=1 / 2048,
                        help="cost per squared piece length (b)")
    parser.add_argument("--workers", type=int, default=2,
                        help="DataLoader worker processes per rank (baseline)")
    parser.add_argument("--images", choices=("auto", "on", "off"), default="auto",
                        help="add the image-text source of --image-config: auto adds it "
                             "when DATA/images exists and overlord.decode_image is built")
    parser.add_argument("--image-config",
                        default=os.path.join(REPO, "examples", "multimodal.yaml"),
                        help="job whose webdataset source is added")
    parser.add_argument("--image-weight", type=float, default=0.25,
                        help="mixture weight of the image-text source, next to the "
                             "quickstart's weights")
    parser.add_argument("--designs", default=",".join(DESIGNS),
                        help="comma-separated designs to run (all three for the ratios)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a top-level key of the job on both sides, e.g. "
                             "buffer_documents=64 (a YAML value)")
    parser.add_argument("--work", required=True, help="folder for configs and logs")
    parser.add_argument("--plot", help="write the PNG plot here")
    args = parser.parse_args()

    if args.steps < 1 or args.warmup < 1 or args.step_ms <= 0:
        parser.error("--steps and --warmup must be >= 1 and --step-ms > 0")
    rank_counts = [int(ranks) for ranks in args.ranks.split(",")]
    job = load_job(args.config, args.data, args)
    for override in args.set:
        key, _, value = override.partition("=")
        if key == "sources" or (key not in job and key not in OVERLORD_ONLY_KEYS):
            parser.error(f"--set {override}: {key} is not a top-level key of the job")
        job[key] = yaml.safe_load(value)
    if args.images != "off":
        import overlord
        available = (os.path.isdir(os.path.join(args.data, "images")) and
                     hasattr(overlord, "decode_image") and os.path.exists(args.image_config))
        if available:
            add_image_source(job, args.image_config, args.data, args.image_weight)
        elif args.images == "on":
            parser.error("--images on needs DATA/images, overlord.decode_image and "
                         f"{args.image_config}")
    designs = args.designs.split(",")
    unknown = sorted(set(designs) - set(DESIGNS))
    if unknown:
        parser.error(f"--designs: unknown {', '.join(unknown)}; use {', '.join(DESIGNS)}")

    results = {}
    for ranks in rank_counts:
        for design in designs:
            result = run_design(design, ranks, job, args, args.work)
            results[(design, ranks)] = result
            print(json.dumps(result), flush=True)
    if designs != list(DESIGNS):
        return

    print()
    print(f"sources: {', '.join(spec['name'] for spec in job['sources'])}")
    print(f"{'design':<18} {'R':>2} {'PSS peak MB':>12} {'tokens/s':>11} "
          f"{'sim step ms':>11} {'imb mean':>8} {'imb max':>8} {'wait ms':>8} {'cores':>6}")
    for ranks in rank_counts:
        for design in DESIGNS:
            row = results[(design, ranks)]
            print(f"{design:<18} {ranks:>2} {row['pss_peak_mb']:>12.1f} "
                  f"{row['tokens_per_s']:>11,} {row['simulated_step_ms']:>11.2f} "
                  f"{row['imbalance_mean']:>8.3f} {row['imbalance_max']:>8.3f} "
                  f"{row['data_wait_ms']:>8.2f} {row['fleet_cores']:>6.2f}")

    summary = {"bench": "baseline", "workers_per_rank": args.workers, "steps": args.steps,
               "step_ms": args.step_ms, "sources": [spec["name"] for spec in job["sources"]]}
    for ranks in rank_counts:
        baseline = results[("baseline", ranks)]
        entry = {}
        for design, mode in (("overlord_all", "all"), ("overlord_cluster", "cluster")):
            overlord = results[(design, ranks)]
            entry[f"memory_ratio_{mode}"] = round(baseline["pss_peak_mb"] / overlord["pss_peak_mb"], 2)
            entry[f"throughput_ratio_{mode}"] = round(
                overlord["tokens_per_s"] / baseline["tokens_per_s"], 3)
            entry[f"simulated_step_ratio_{mode}"] = round(
                baseline["simulated_step_ms"] / overlord["simulated_step_ms"], 3)
        entry["memory_ratio"] = min(entry["memory_ratio_all"], entry["memory_ratio_cluster"])
        entry["throughput_ratio"] = min(entry["throughput_ratio_all"],
                                        entry["throughput_ratio_cluster"])
        for design in DESIGNS:
            row = results[(design, ranks)]
            entry[design] = {key: row[key] for key in (
                "pss_peak_mb", "tokens_per_s", "simulated_step_ms", "imbalance_mean",
                "imbalance_max", "data_wait_ms", "padding_fraction", "fleet_cores",
                "trainer_fetch_cpu_ms")}
        summary[f"R{ranks}"] = entry
    if args.plot:
        plot(results, rank_counts, args.plot)
        print(f"plot written to {args.plot}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
