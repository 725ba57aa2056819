"""Overlord's mixture, packing and row layout rules, re-implemented in Python.

The per-rank DataLoader baseline packs its own rows with these functions,
so that both sides of bench/baseline deliver batches built by the same
rules. Each function names the C++ code whose rules it follows:

- counter-based draws and shard orders: planner/rng.hpp;
- the mixture (largest deficit by tokens, ties by a keyed draw):
  planner/mixture.cpp;
- splitting and packing (carried pieces first, then first-fit in
  decreasing length, leftovers carried): planner/packer.cpp, driven as in
  step_planner::plan_next;
- labels, loss mask, position ids, cu_seqlens and row_splits:
  transport/batch_builder.cpp;
- the modelled cost of a piece, a*l + b*l^2: cost_model::row_cost in
  planner/balancer.cpp, with attention masked per document.
"""

import numpy as np

MASK64 = (1 << 64) - 1
IGNORE_LABEL = -100


def mix64(value):
    """SplitMix64's output function."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def draw(key, counter):
    """Return the ``counter``-th 64-bit draw of the stream named by ``key``."""
    return mix64(mix64(key) ^ mix64((counter ^ 0x5851F42D4C957F2D) & MASK64))


def stable_hash(text):
    """Return the 64-bit FNV-1a hash of the UTF-8 bytes of ``text``."""
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value ^= byte
        value = (value * 0x100000001B3) & MASK64
    return value


def epoch_shard_order(shard_count, seed, source_name, epoch):
    """Return the shard order of ``epoch``: Fisher-Yates keyed by (seed, name, epoch)."""
    key = draw(draw(seed, stable_hash(source_name)), epoch)
    order = list(range(shard_count))
    for i in range(shard_count, 1, -1):
        j = (draw(key, i) * i) >> 64
        order[i - 1], order[j] = order[j], order[i - 1]
    return order


class Mixture:
    """Picks the source with the largest deficit: its share of everything
    drawn so far minus what it contributed."""

    def __init__(self, weights, seed):
        total = float(sum(weights))
        if not all(weight >= 0 for weight in weights) or not total > 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
        self.shares = [weight / total for weight in weights]
        self.drawn = [0.0] * len(weights)
        self.total = 0.0
        self.seed = seed

    def pick(self, step, pick_index):
        """Return the next source; exact ties go to a draw keyed by (seed, step, pick)."""
        key = draw(draw(self.seed, step), pick_index)
        best = None
        best_deficit = 0.0
        best_tiebreak = 0
        for source, share in enumerate(self.shares):
            if share <= 0:
                continue
            deficit = share * self.total - self.drawn[source]
            tiebreak = draw(key, source)
            if best is None or deficit > best_deficit or (
                    deficit == best_deficit and tiebreak < best_tiebreak):
                best, best_deficit, best_tiebreak = source, deficit, tiebreak
        return best

    def record(self, source, amount):
        self.drawn[source] += amount
        self.total += amount


class Piece:
    """A slice of one document's tokens (EOS included) placed in one row."""

    __slots__ = ("source", "key", "tokens", "offset", "length", "patches", "image")

    def __init__(self, source, key, tokens, offset, length, patches=0, image=None):
        self.source = source
        self.key = key
        self.tokens = tokens  # the whole document, shared by its pieces
        self.offset = offset
        self.length = length
        # Image positions at the start of an image-text document, and its
        # decoded image (overlord.decode_image's dict); 0 and None for text.
        self.patches = patches
        self.image = image

    def ends_document(self):
        return self.offset + self.length == len(self.tokens)


def split_document(source, key, tokens, capacity, patches=0, image=None):
    """Split a document into pieces of at most ``capacity`` tokens, in order.

    An image-text document (``patches`` > 0) must fit one row and stays whole.
    """
    if patches and len(tokens) > capacity:
        raise ValueError(f"image-text document {key} has {len(tokens)} tokens, "
                         f"more than a row's {capacity}")
    return [Piece(source, key, tokens, offset, min(capacity, len(tokens) - offset),
                  patches, image)
            for offset in range(0, len(tokens), capacity)]


def pack_rows(carried, fresh, row_count, capacity):
    """Pack ``carried`` then ``fresh`` pieces into rows; return (rows, leftover).

    Carried pieces are placed first in order. Fresh pieces follow first-fit
    in decreasing length, ties in input order. Pieces that fit nowhere are
    returned as leftover, carried pieces first.
    """
    rows = [[] for _ in range(row_count)]
    free = [capacity] * row_count

    def place(piece):
        for row in range(row_count):
            if free[row] >= piece.length:
                rows[row].append(piece)
                free[row] -= piece.length
                return True
        return False

    leftover = [piece for piece in carried if not place(piece)]
    order = sorted(range(len(fresh)), key=lambda index: -fresh[index].length)
    placed = [False] * len(fresh)
    for index in order:
        placed[index] = place(fresh[index])
    leftover += [piece for index, piece in enumerate(fresh) if not placed[index]]
    return rows, leftover


def piece_cost(length, linear, quadratic):
    return linear * length + quadratic * length * length


def lay_out_rows(rows, sequence_length, pad_id):
    """Return the batch arrays of packed rows, laid out like Overlord's batches.

    Keys: ``tokens``, ``labels``, ``position_ids`` (int32) and ``loss_mask``
    (uint8) of shape [rows, sequence_length], 1-D ``cu_seqlens`` (int32)
    and ``row_splits`` (uint32), and ``images``: one dict (``row``,
    ``row_offset``, ``patches``, ``pixels``, ``mean``, ``std``) per
    image-text document that starts in the rows, with uint8 pixels as
    :func:`overlord.decode_image` returns them.
    """
    count = len(rows)
    tokens = np.full((count, sequence_length), pad_id, dtype=np.int32)
    labels = np.full((count, sequence_length), IGNORE_LABEL, dtype=np.int32)
    loss_mask = np.zeros((count, sequence_length), dtype=np.uint8)
    position_ids = np.zeros((count, sequence_length), dtype=np.int32)
    cu_seqlens = []
    row_splits = [0]
    images = []
    for row, pieces in enumerate(rows):
        position = 0
        for piece in pieces:
            cu_seqlens.append(position)
            end = position + piece.length
            document = piece.tokens
            tokens[row, position:end] = document[piece.offset:piece.offset + piece.length]
            position_ids[row, position:end] = np.arange(piece.length, dtype=np.int32)
            # The label is the next token of the same document, which for the
            # last token of a split piece is the first token of the next
            # piece. The last token of a document and image positions have
            # no label.
            following = document[piece.offset + 1:piece.offset + piece.length + 1]
            first = position + max(0, piece.patches - piece.offset)
            labelled_end = position + len(following)
            if first < labelled_end:
                labels[row, first:labelled_end] = following[first - position:]
                loss_mask[row, first:labelled_end] = 1
            if piece.patches and piece.offset == 0:
                images.append({"row": row, "row_offset": position, "patches": piece.patches,
                               "pixels": piece.image["pixels"], "mean": piece.image["mean"],
                               "std": piece.image["std"]})
            position = end
        cu_seqlens.append(position)
        row_splits.append(len(cu_seqlens))
    return {
        "tokens": tokens,
        "labels": labels,
        "loss_mask": loss_mask,
        "position_ids": position_ids,
        "cu_seqlens": np.asarray(cu_seqlens, dtype=np.int32),
        "row_splits": np.asarray(row_splits, dtype=np.uint32),
        "images": images,
    }


def piece_lengths(cu_seqlens, row_splits):
    """Return the piece lengths of every row from ``cu_seqlens`` and ``row_splits``."""
    lengths = []
    for row in range(len(row_splits) - 1):
        starts = cu_seqlens[row_splits[row]:row_splits[row + 1]]
        lengths.extend(int(end - start) for start, end in zip(starts[:-1], starts[1:]))
    return lengths
