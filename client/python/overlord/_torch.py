"""PyTorch helpers, imported only when used, so the package works without torch."""

import warnings

import numpy as np
import torch
import torch.utils.data

from ._overlord import normalise_image
from .client import Client

ARRAY_KEYS = ("tokens", "labels", "loss_mask", "position_ids", "cu_seqlens",
              "row_splits")


def to_torch(batch):
    """Return a copy of ``batch`` whose arrays are CPU tensors.

    ``tokens``, ``labels``, ``loss_mask``, ``position_ids`` and
    ``cu_seqlens`` become tensors through ``torch.from_numpy``, so they
    share memory with the received message and keep it alive. They are
    read-only memory: clone a tensor before changing it in place.
    ``row_splits`` (uint32 on the wire) is copied to int64, because
    PyTorch has no general uint32 tensors before 2.3. Each image dict is
    copied with ``pixels`` replaced by the normalised float32 tensor
    ``[channels, height, width]`` (see :func:`overlord.normalise_image`).
    Other entries are passed through.
    """
    out = dict(batch)
    out["images"] = [dict(image, pixels=torch.from_numpy(
        normalise_image(image["pixels"], image["mean"], image["std"])))
        for image in batch["images"]]
    with warnings.catch_warnings():
        # torch.from_numpy warns once about read-only arrays; the docstring
        # above states the contract instead.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writ")
        for key in ARRAY_KEYS:
            array = batch[key]
            if array.dtype == np.uint32:
                out[key] = torch.from_numpy(array.astype(np.int64))
            else:
                out[key] = torch.from_numpy(array)
    return out


class OverlordIterableDataset(torch.utils.data.IterableDataset):
    """IterableDataset over one rank's batches, for ``DataLoader(batch_size=None)``.

    The arguments are those of :class:`overlord.Client`. The client is
    created on first iteration, in the process that iterates, and yields
    dicts of tensors (see :func:`to_torch`) unless ``as_tensors`` is false.
    Each item is already a whole batch, so use ``batch_size=None`` and at
    most one worker: more workers would each receive the same rank's
    stream.
    """

    def __init__(self, as_tensors=True, **client_options):
        super().__init__()
        self._client_options = client_options
        self._as_tensors = as_tensors
        self._client = None
        self._pending_state = None

    def _connect(self):
        if self._client is None:
            self._client = Client(**self._client_options)
            if self._pending_state is not None:
                self._client.load_state_dict(self._pending_state)
                self._pending_state = None
        return self._client

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            raise ValueError(
                f"OverlordIterableDataset needs at most one DataLoader worker, "
                f"got num_workers={info.num_workers}: every worker would "
                f"receive the same rank's batches")
        client = self._connect()
        while True:
            batch = client.next()
            yield to_torch(batch) if self._as_tensors else batch

    def state_dict(self):
        """Return the client's state (see :meth:`overlord.Client.state_dict`)."""
        if self._client is None:
            if self._pending_state is not None:
                return dict(self._pending_state)
            first_step = self._client_options.get("first_step", 0)
            return {"rank": self._client_options.get("rank", 0),
                    "cp_rank": self._client_options.get("cp_rank", 0),
                    "next_step": first_step}
        return self._client.state_dict()

    def load_state_dict(self, state):
        """Resume at ``state["next_step"]``, now or when iteration starts."""
        if self._client is None:
            # Validate now, even though the client is created later.
            Client._validate_state(state, self._client_options.get("rank", 0),
                                   self._client_options.get("cp_rank", 0))
            self._pending_state = dict(state)
        else:
            self._client.load_state_dict(state)
