"""Preference items -> the micro-batch the rm and dpo stages train on (``PrefBatch``): every candidate
sequence of every item, padded or laid end to end in one padding-free row, with the index of each item's
candidates, ranks, margins, soft labels and precomputed reference log-probs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from rlhf_cli.data.packing import collate, collate_flat, example_row
from rlhf_cli.data.preference import PrefItem


@dataclass
class PrefBatch:
    """All candidates of a micro-batch, CANDIDATE-major: sequences [0, B) are every item's first sequence
    (chosen), [B, 2B) the second (rejected / KL pair), and so on.

    Padded: one right-padded row per sequence. Padding-free (``position_ids`` set, ``attention_mask``
    None): all sequences end to end in ONE row, positions restarting per sequence; ``seq_ids`` says which
    sequence each token belongs to and ``last`` where each sequence ends."""

    input_ids: torch.Tensor  # [N, T] padded, [1, L] padding-free
    attention_mask: Optional[torch.Tensor]  # [N, T]; None when padding-free
    labels: torch.Tensor  # next-token targets on answer tokens, IGNORE elsewhere (same shape as input_ids)
    index: torch.Tensor  # [B, K] sequence number of item b's candidate k (0 where absent; see valid)
    valid: torch.Tensor  # [B, K] bool
    ranks: torch.Tensor  # [B, K]
    margin: Optional[torch.Tensor]  # [B] (0 where a pair has none) or None
    prob: Optional[torch.Tensor]  # [B] soft labels P(chosen is better) (1 where a pair has none) or None
    label: Optional[torch.Tensor]  # [B] bool (kto)
    ref_logps: Optional[torch.Tensor]  # [N] (precomputed reference)
    step_rows: torch.Tensor  # [M] process: row and position of each scored step
    step_cols: torch.Tensor
    step_labels: torch.Tensor  # [M]
    num_items: int
    num_pad: int
    position_ids: Optional[torch.Tensor] = None  # [1, L] padding-free
    seq_ids: Optional[torch.Tensor] = None  # [L] padding-free: the sequence of each token
    last: Optional[torch.Tensor] = None  # [N] padding-free: the position of each sequence's last token

    def to(self, device):
        kw = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return PrefBatch(**kw)

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0]) if self.last is None else int(self.last.numel())

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int(self.input_ids.numel()) - self.num_pad


def collate_preferences(items: Sequence[PrefItem], pad_id: int, padding_free: bool = False) -> PrefBatch:
    B, K = len(items), max(len(it.seqs) for it in items)
    rows, index, valid = [], torch.zeros(B, K, dtype=torch.long), torch.zeros(B, K, dtype=torch.bool)
    ranks = torch.zeros(B, K, dtype=torch.long)
    refs: List[float] = []
    for k in range(K):
        for b, it in enumerate(items):
            if k < len(it.seqs):
                index[b, k], valid[b, k], ranks[b, k] = len(rows), True, it.ranks[k]
                rows.append((it.seqs[k], it.prompt_lens[k]))
                if it.ref_logps is not None:
                    refs.append(it.ref_logps[k])
    # Each sequence as a training row (answer tokens as targets), then padded or laid end to end exactly as
    # SFT rows are (data.packing).
    seq_rows = [example_row(seq, [int(t >= p_len) for t in range(len(seq))]) for seq, p_len in rows]
    srows, scols, slabels = [], [], []
    for b, it in enumerate(items):
        srows += [int(index[b, 0])] * len(it.step_ends)
        scols += it.step_ends
        slabels += it.step_labels
    flat = {}
    if padding_free:
        batch = collate_flat(seq_rows)
        lengths = torch.tensor([len(r) for r in seq_rows])
        starts = lengths.cumsum(0) - lengths
        flat = dict(position_ids=batch.position_ids, last=starts + lengths - 1,
                    seq_ids=torch.repeat_interleave(torch.arange(len(seq_rows)), lengths))
        scols = [int(starts[r]) + c for r, c in zip(srows, scols)]  # process steps: positions in the one row
        srows = [0] * len(scols)
    else:
        batch = collate(seq_rows, pad_id, packed=False)
    has_margin = any(it.margin is not None for it in items)
    margin = torch.tensor([float(it.margin or 0.0) for it in items]) if has_margin else None
    has_prob = any(it.prob is not None for it in items)
    prob = torch.tensor([1.0 if it.prob is None else it.prob for it in items]) if has_prob else None
    label = torch.tensor([bool(it.label) for it in items]) if items[0].label is not None else None
    return PrefBatch(batch.input_ids, batch.attention_mask, batch.labels, index, valid, ranks, margin, prob, label,
                     torch.tensor(refs) if len(refs) == len(rows) else None,
                     torch.tensor(srows, dtype=torch.long), torch.tensor(scols, dtype=torch.long),
                     torch.tensor(slabels, dtype=torch.float32), B, batch.num_pad, **flat)
