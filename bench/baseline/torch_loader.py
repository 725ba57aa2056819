"""The way teams load data today: one PyTorch DataLoader per rank.

Each rank builds ``DataLoader(PerRankPackedDataset(...), batch_size=None,
num_workers=W)``. Every worker process of every rank opens every source
and reads its slice of each (corpus.py, as global worker ``g`` of
``G = ranks * W``). It tokenizes with Overlord's C++ tokenizer
(``overlord.Tokenizer``), mixes the sources by tokens with the configured
weights and packs its own rows with the rules in packing.py. Each worker
yields whole batches of ``rows_per_rank`` rows, and the DataLoader hands
them to the rank in turn.
"""

import numpy as np
import torch
import torch.utils.data

import overlord

import corpus
import packing


class PerRankPackedDataset(torch.utils.data.IterableDataset):
    """Packed batches of one rank, built inside each of its DataLoader workers."""

    def __init__(self, job, rank, ranks, workers):
        super().__init__()
        self.job = job
        self.rank = rank
        self.ranks = ranks
        self.workers = max(1, workers)
        # Loaded in the rank process, so forked workers share it copy-on-write.
        self.tokenizer = overlord.Tokenizer(job["tokenizer"])

    def __iter__(self):
        """Yield this worker's batches forever, each a dict of tensors like Overlord's."""
        info = torch.utils.data.get_worker_info()
        worker_id = info.id if info is not None else 0
        worker = self.rank * self.workers + worker_id
        worker_count = self.ranks * self.workers
        job = self.job

        streams = [
            corpus.SourceStream(index, spec, self.tokenizer, job, worker, worker_count)
            for index, spec in enumerate(job["sources"])
        ]
        documents = [stream.documents() for stream in streams]
        weights = [float(spec.get("weight", 1)) for spec in job["sources"]]
        mixture = packing.Mixture(weights, job["seed"])

        capacity = job["sequence_length"]
        rows = job["rows_per_rank"]
        budget = rows * capacity
        carried = []
        step = 0
        while True:
            # Draw documents until they cover the rows, as
            # step_planner::plan_next does for the global rows.
            fresh = []
            filled = sum(piece.length for piece in carried)
            pick = 0
            while filled < budget:
                source = mixture.pick(step, pick)
                pick += 1
                key, tokens, patches, image = next(documents[source])
                mixture.record(source, len(tokens))
                fresh += packing.split_document(source, key, tokens, capacity, patches, image)
                filled += len(tokens)

            packed, carried = packing.pack_rows(carried, fresh, rows, capacity)
            arrays = packing.lay_out_rows(packed, capacity, self.tokenizer.eos_id)
            images = arrays.pop("images")
            batch = {name: torch.from_numpy(array) for name, array in arrays.items()
                     if name != "row_splits"}
            # PyTorch 1.13 has no general uint32 tensors.
            batch["row_splits"] = torch.from_numpy(arrays["row_splits"].astype(np.int64))
            # Normalised to float32 in the worker, as torchvision's
            # ToTensor and Normalize transforms do in a DataLoader.
            batch["images"] = [dict(image, pixels=torch.from_numpy(
                overlord.normalise_image(image["pixels"], image["mean"], image["std"])))
                for image in images]
            batch["tokens_used"] = int(sum(piece.length for row in packed for piece in row))
            batch["skipped"] = sum(stream.skipped for stream in streams)
            yield batch
            step += 1


def make_loader(job, rank, ranks, workers):
    """Return the rank's DataLoader, as a training script would build it.

    Workers are forked, the default on Linux, which the rank process would
    not inherit when a launcher started it with the spawn method.
    """
    dataset = PerRankPackedDataset(job, rank, ranks, workers)
    context = "fork" if workers > 0 else None
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       multiprocessing_context=context)
