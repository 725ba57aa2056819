"""Python trainer client for Overlord.

:class:`Client` receives one rank's packed batches from an Overlord
constructor as dicts of NumPy arrays that view the received message
without a copy. :class:`Tokenizer` and :func:`decode_image` are
Overlord's GPT-2 tokenizer and image decoder, for Python data loaders
that preprocess like Overlord; :func:`normalise_image` turns a batch's
uint8 image pixels into the normalised float32 values. :func:`to_torch` and
:class:`OverlordIterableDataset` need PyTorch and import it on first use.
"""

from ._overlord import Tokenizer, decode_image, normalise_image
from .client import Client
from .errors import (
    InternalError,
    InvalidConfigError,
    InvalidInputError,
    NotFoundError,
    OverlordError,
    OverlordIOError,
    TimeoutError,
    UnavailableError,
)

__all__ = [
    "Client",
    "InternalError",
    "InvalidConfigError",
    "InvalidInputError",
    "NotFoundError",
    "OverlordError",
    "OverlordIOError",
    "OverlordIterableDataset",
    "TimeoutError",
    "Tokenizer",
    "UnavailableError",
    "decode_image",
    "normalise_image",
    "to_torch",
]

_TORCH_NAMES = ("to_torch", "OverlordIterableDataset")


def __getattr__(name):
    # PEP 562: import torch only when a torch helper is first used.
    if name in _TORCH_NAMES:
        from . import _torch
        return getattr(_torch, name)
    raise AttributeError(f"module 'overlord' has no attribute {name!r}")
