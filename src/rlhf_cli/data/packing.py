"""Turn tokenised examples into training rows and micro-batches.

Packing (default): examples are bin-packed (best-fit decreasing) into rows of ``max_length`` tokens.
Each example keeps its own position ids (restarting at 0); transformers derives a block-diagonal causal
mask from the restarts when no attention mask is passed, so packed examples never attend to each other
(a test checks logits are identical to running each example alone). Labels never cross an example
boundary.

Padding-free (default): each micro-batch's rows are laid end to end in one row (``collate_flat``), so no
micro-batch holds padding whatever the lengths. Otherwise rows are padded to the micro-batch's longest.

Without packing, rows are single examples; each step's rows are sorted by length before being split
into micro-batches, so a micro-batch pads only to its own longest example (length bucketing).

The rows of one optimizer step depend only on (seed, epoch, step), never on micro_batch_size/grad_accum
split or process count, which is what makes gradient accumulation and resume reproducible.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import List, Sequence

import torch

IGNORE = -100


@dataclass
class Row:
    input_ids: List[int]
    labels: List[int]  # next-token targets aligned with input positions; IGNORE where no loss
    position_ids: List[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def _targets(ids: Sequence[int], mask: Sequence[int]) -> List[int]:
    return [ids[t + 1] if mask[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]


def example_row(ids: Sequence[int], mask: Sequence[int]) -> Row:
    return Row(list(ids), _targets(ids, mask), list(range(len(ids))))


def pack_examples(examples, max_length: int) -> List[Row]:
    """Best-fit-decreasing bin packing of examples into rows of at most max_length tokens."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), i))
    bins: List[List[int]] = []
    free: List[tuple] = []  # sorted (remaining capacity, bin index)
    for i in order:
        n = len(examples[i].input_ids)
        j = bisect.bisect_left(free, (n, -1))
        if j < len(free):
            cap, b = free.pop(j)
            bins[b].append(i)
            bisect.insort(free, (cap - n, b))
        else:
            bins.append([i])
            bisect.insort(free, (max_length - n, len(bins) - 1))
    rows = []
    for members in bins:
        ids, labels, pos = [], [], []
        for i in sorted(members):
            ex = examples[i]
            ids += ex.input_ids
            labels += _targets(ex.input_ids, ex.loss_mask)
            pos += list(range(len(ex.input_ids)))
        rows.append(Row(ids, labels, pos))
    return rows


def build_rows(examples, max_length: int, packing: bool) -> List[Row]:
    if packing:
        return pack_examples(examples, max_length)
    return [example_row(ex.input_ids, ex.loss_mask) for ex in examples]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor | None  # [B, T] for padded (unpacked) batches; None when packed
    num_loss_tokens: int
    num_pad: int

    def to(self, device):
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.labels), move(self.position_ids),
                     move(self.attention_mask), self.num_loss_tokens, self.num_pad)


def collate(rows: Sequence[Row], pad_id: int, packed: bool, pad_to: int | None = None) -> Batch:
    width = pad_to if packed and pad_to else max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    attn = None if packed else torch.zeros((len(rows), width), dtype=torch.long)
    num_pad = 0
    for b, r in enumerate(rows):
        n = len(r)
        ids[b, :n] = torch.tensor(r.input_ids)
        labels[b, :n] = torch.tensor(r.labels)
        pos[b, :n] = torch.tensor(r.position_ids)
        # The pad tail gets its own positions (a separate "example" in a packed row, masked in a padded one).
        pos[b, n:] = torch.arange(width - n)
        if attn is not None:
            attn[b, :n] = 1
        num_pad += width - n
    return Batch(ids, labels, pos, attn, int((labels != IGNORE).sum()), num_pad)


def collate_flat(rows: Sequence[Row]) -> Batch:
    """Padding-free: the micro-batch's rows laid end to end as ONE row ``[1, sum of lengths]``.

    Every example keeps its own position ids (restarting at 0) and labels never cross an example, so the
    loss is the same as with padded rows; attention stays within each example (``models.attention``
    runs it segment by segment at causal cost) and not one token is padding."""
    ids = torch.tensor([t for r in rows for t in r.input_ids]).unsqueeze(0)
    labels = torch.tensor([t for r in rows for t in r.labels]).unsqueeze(0)
    pos = torch.tensor([t for r in rows for t in r.position_ids]).unsqueeze(0)
    return Batch(ids, labels, pos, None, int((labels != IGNORE).sum()), 0)


def epoch_order(num_rows: int, seed: int, epoch: int, shuffle: bool) -> List[int]:
    if not shuffle:
        return list(range(num_rows))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_rows, generator=g).tolist()


def micro_batches(n: int, size: int) -> List[List[int]]:
    """Consecutive index chunks [0..size), [size..2*size), ... covering range(n)."""
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def step_micro_batches(rows: Sequence, step_rows: Sequence[int], micro_batch_size: int, world: int,
                       rank: int) -> List[List]:
    """Split one step's rows into this rank's micro-batches (longest first, dealt round-robin)."""
    by_len = sorted(step_rows, key=lambda i: -len(rows[i]))
    chunks = [by_len[k:k + micro_batch_size] for k in range(0, len(by_len), micro_batch_size)]
    return [[rows[i] for i in chunk] for chunk in chunks[rank::world]]
