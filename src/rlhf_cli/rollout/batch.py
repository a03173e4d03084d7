"""The rollout's batch layout: left-padded prompts, right-padded responses and their masks
(``RolloutBatch``, what ``generate`` returns), and the padding helpers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class RolloutBatch:
    """Result of :func:`generate`; row ``i`` corresponds to ``prompts[i]``.

    Attributes:
        prompt_ids: ``[N, P]`` LEFT-padded with ``pad_id``.
        prompt_mask: ``[N, P]`` 1 for real prompt tokens.
        response_ids: ``[N, L]`` RIGHT-padded with ``pad_id`` (``L`` = longest response).
        response_mask: ``[N, L]`` 1 for generated tokens, including the EOS / stop-string
            token that ended the row.
        logprobs: ``[N, L]`` fp32 log-prob of each sampled token under the temperature-scaled
            distribution BEFORE top-k/top-p filtering (see module doc); 0 at pads.
        finished: ``[N]`` bool, True if ended by EOS or a stop string, False if truncated at
            ``max_new_tokens``.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    finished: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_ids.size(0)

    @property
    def response_lengths(self) -> torch.Tensor:
        """``[N]`` number of generated tokens per row."""
        return self.response_mask.sum(-1)

    def texts(self, tokenizer: Any, skip_special_tokens: bool = True) -> list[str]:
        """Decode each row's response (masked tokens only)."""
        ids = self.response_ids.tolist()
        lens = self.response_lengths.tolist()
        return [
            tokenizer.decode(row[:n], skip_special_tokens=skip_special_tokens)
            for row, n in zip(ids, lens)
        ]

    def sequence_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forcing inputs over prompt+response: ``(input_ids, attention_mask, position_ids)``.

        Each ``[N, P+L]``; the logits predicting ``response_ids[:, t]`` are at column ``P - 1 + t``.
        """
        input_ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)
        attention_mask = torch.cat([self.prompt_mask, self.response_mask], dim=1).long()
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_(min=0)
        return input_ids, attention_mask, position_ids

    def to(self, device: torch.device | str) -> "RolloutBatch":
        return RolloutBatch(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})


def left_pad(
    prompts: list[list[int]], pad_id: int, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists to ``length`` (default: longest) -> ``(ids [B,P], mask [B,P])`` int64."""
    P = max(len(p) for p in prompts) if length is None else length
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
        if len(p) > P:
            raise ValueError(f"prompt {i} longer ({len(p)}) than pad length {P}")
        ids[i, P - len(p):] = torch.as_tensor(p, dtype=torch.long)
        mask[i, P - len(p):] = 1
    return ids, mask


def pad_columns(x: torch.Tensor, length: int, value: float, left: bool) -> torch.Tensor:
    """``x`` padded with ``value`` to ``length`` columns, on the left or the right."""
    extra = length - x.size(1)
    if extra <= 0:
        return x
    return F.pad(x, (extra, 0) if left else (0, extra), value=value)
