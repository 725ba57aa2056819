"""Train a tiny GPT-style model on CPU from a running Overlord job.

Each data-parallel rank runs in its own process, receives its batches with
overlord.Client and averages gradients with torch.distributed (gloo on
127.0.0.1). Attention is causal within each packed document and never
crosses document boundaries: the per-row masks come from ``cu_seqlens``
and ``row_splits``, and the learned position embeddings use the batch's
``position_ids``, which restart at 0 for every document piece.

Start the job first, then the trainer (it reads ranks, base_port and
sequence_length from the config):

    bazel-bin/actors/overlordd --role all --config examples/quickstart.yaml
    /usr/bin/python3 examples/train_tiny_gpt.py --config examples/quickstart.yaml

Needs Debian's python3-torch and the installed overlord package
(scripts/install-python). Rank 0 prints the loss averaged over ranks.

The defaults train on the first 256 positions of every row (--context),
because Debian 12's python3-torch 1.13 is built with a generic BLAS. On a
2-core VM, a 1024x1024 matrix product ran at about 6 GFLOP/s per core,
and whole 1024-token rows took about 10 s per step. With the defaults,
300 steps took 475 s there, and the mean loss of the first 20 steps was
9.6 and of the last 20 steps 6.0.
"""

import argparse
import math
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
import yaml

import overlord


class Block(nn.Module):
    """Pre-norm transformer block with an explicit attention mask."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x, allowed):
        rows, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(dim, dim=-1)
        shape = (rows, length, self.heads, dim // self.heads)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(dim // self.heads)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(rows, length, dim)
        x = x + self.proj(attended)
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    """GPT-2-vocabulary decoder with an adaptive softmax output layer.

    The adaptive softmax computes full logits only for the first
    ``cutoffs[0]`` token ids, which keeps a 50257-token output affordable
    on a CPU. It suits GPT-2 ids because GPT-2 numbers its BPE merges in
    the order they were learned, so common tokens tend to have low ids.
    """

    def __init__(self, vocab, max_positions, dim, heads, layers, cutoffs):
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(max_positions, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.AdaptiveLogSoftmaxWithLoss(dim, vocab, cutoffs, div_value=4.0)

    def forward(self, tokens, position_ids, allowed, loss_mask, labels):
        x = self.tokens(tokens) + self.positions(position_ids)
        for block in self.blocks:
            x = block(x, allowed)
        hidden = self.norm(x)
        counted = loss_mask.bool()
        return self.head(hidden[counted], labels[counted].long()).loss


def document_masks(cu_seqlens, row_splits, rows, length):
    """Return [rows, length, length] booleans: causal attention within each document.

    Row r's pieces start at ``cu_seqlens[row_splits[r]:row_splits[r+1]-1]``
    and its used part ends at the last entry. Each padding position gets a
    document of its own, so it attends only to itself. ``length`` may be
    shorter than the row, which crops the masks to the row's first
    ``length`` positions.
    """
    positions = torch.arange(length)
    causal = positions[None, :] <= positions[:, None]
    masks = torch.empty(rows, length, length, dtype=torch.bool)
    for row in range(rows):
        bounds = cu_seqlens[row_splits[row]:row_splits[row + 1]].long()
        starts, used = bounds[:-1], int(bounds[-1])
        document = torch.searchsorted(starts, positions, right=True) - 1
        document[used:] = -1 - positions[used:]
        masks[row] = (document[:, None] == document[None, :]) & causal
    return masks


def average_gradients(model, world_size):
    for parameter in model.parameters():
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
        parameter.grad /= world_size


def train(rank, args, job):
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.dist_port}",
                            rank=rank, world_size=job["ranks"])
    torch.manual_seed(args.seed)
    model = TinyGPT(vocab=50257, max_positions=job["sequence_length"], dim=args.dim,
                    heads=args.heads, layers=args.layers, cutoffs=[512, 4096])
    for parameter in model.parameters():
        dist.broadcast(parameter.data, src=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    client = overlord.Client(endpoint=f"{args.host}:{job['base_port'] + rank}", rank=rank,
                             timeout=args.timeout)
    losses = []
    waited = 0.0
    started = time.monotonic()
    tokens_seen = 0
    for step in range(args.steps):
        wait_started = time.monotonic()
        batch = overlord.to_torch(client.next())
        waited += time.monotonic() - wait_started

        rows = batch["rows"]
        length = min(args.context, batch["row_length"])
        allowed = document_masks(batch["cu_seqlens"], batch["row_splits"], rows, length)
        window = slice(0, length)
        warmup = min(1.0, (step + 1) / 20)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * warmup
        loss = model(batch["tokens"][:, window], batch["position_ids"][:, window], allowed,
                     batch["loss_mask"][:, window], batch["labels"][:, window])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(model, job["ranks"])
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss = mean_loss.item() / job["ranks"]
        losses.append(mean_loss)
        tokens_seen += int(batch["loss_mask"][:, window].sum())
        if rank == 0 and (step % args.print_every == 0 or step + 1 == args.steps):
            elapsed = time.monotonic() - started
            print(f"step {step:4d}  loss {mean_loss:.3f}  "
                  f"{tokens_seen * job['ranks'] / elapsed:,.0f} trained tokens/s  "
                  f"waiting for data {100 * waited / elapsed:.1f}%", flush=True)

    if rank == 0:
        window = max(1, min(20, len(losses) // 4))
        first = sum(losses[:window]) / window
        last = sum(losses[-window:]) / window
        print(f"mean loss of the first {window} steps {first:.3f}, "
              f"of the last {window} steps {last:.3f}")
    client.close()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/quickstart.yaml",
                        help="the job's config (ranks, base_port, sequence_length)")
    parser.add_argument("--host", default="127.0.0.1", help="host of the constructors")
    parser.add_argument("--base-port", type=int,
                        help="port of rank 0's constructor (default: the config's base_port)")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--context", type=int, default=256,
                        help="train on the first CONTEXT positions of each row")
    parser.add_argument("--dim", type=int, default=64, help="model width")
    parser.add_argument("--heads", type=int, default=2, help="attention heads")
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads per rank process")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a batch")
    parser.add_argument("--print-every", type=int, default=10, help="steps between loss lines")
    args = parser.parse_args()

    with open(args.config) as config_file:
        config = yaml.safe_load(config_file)
    job = {"ranks": int(config["ranks"]), "sequence_length": int(config["sequence_length"]),
           "base_port": args.base_port if args.base_port is not None else int(config.get("base_port", 5555))}
    if config.get("topology", {}).get("cp", 1) != 1:
        sys.exit("train_tiny_gpt.py: context parallelism (topology.cp > 1) is not supported")
    args.dist_port = free_port()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(train, args=(args, job), nprocs=job["ranks"], join=True)


if __name__ == "__main__":
    main()
