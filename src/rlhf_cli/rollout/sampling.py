"""Pure logits processing and token sampling for the rollout engine.

Everything here operates on ``[B, V]`` fp32 logits and has no model dependency.

Conventions
-----------
* ``temperature == 0`` means greedy decoding (argmax); top-k / top-p never change
  the argmax so they are skipped in that case.
* ``top_k == 0`` disables top-k; ``top_p >= 1.0`` disables nucleus filtering.
* Top-p keeps the *smallest* prefix of the sorted distribution whose cumulative
  probability is ``>= top_p``; the most likely token is always kept.
* Filtered tokens get ``-inf`` logits (probability exactly 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = [
    "SamplingParams",
    "temperature_scale",
    "apply_top_k",
    "apply_top_p",
    "process_logits",
    "sample",
]


@dataclass
class SamplingParams:
    """Sampling configuration for one rollout call.

    Attributes:
        max_new_tokens: maximum number of generated tokens per sequence.
        temperature: softmax temperature; ``0`` = greedy.
        top_p: nucleus mass in ``(0, 1]``; ``1.0`` = off.
        top_k: keep the ``k`` most likely tokens; ``0`` = off.
        stop_strings: generation of a row stops once its generated text contains
            one of these strings (the tokens that produced it are kept).
        seed: if set and no explicit ``torch.Generator`` is passed to ``generate``,
            a generator seeded with this value is used (reproducible samples).
    """

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop_strings, str):
            self.stop_strings = (self.stop_strings,)
        else:
            self.stop_strings = tuple(self.stop_strings)
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if any(not s for s in self.stop_strings):
            raise ValueError("stop_strings must be non-empty strings")

    @classmethod
    def from_section(cls, sec) -> "SamplingParams":
        """From a stage's sampling fields (config.sampling.SamplingSection: grpo, ppo, rlaif sections)."""
        return cls(max_new_tokens=sec.max_new_tokens, temperature=sec.temperature, top_p=sec.top_p,
                   top_k=sec.top_k, stop_strings=tuple(sec.stop_strings))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def temperature_scale(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Return ``logits / temperature`` (no-op for ``temperature`` 0 or 1)."""
    if temperature == 0 or temperature == 1.0:
        return logits
    return logits / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Mask everything below the k-th largest logit with ``-inf`` (ties at the k-th value are kept)."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: float, *, first_k: int = 256) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of top tokens whose cumulative prob is >= ``top_p``.

    A sorted token ``i`` is kept iff the probability mass strictly before it is ``< top_p``,
    so the top token is always kept and the kept set is minimal.

    Speed: a full vocab sort is slow on CPU (~20 ms for 8 x 49k), so the candidates are taken
    with ``topk(first_k)`` and the window is grown (x4) only while some row's top-``first_k``
    mass is still below ``top_p``. Exact: tokens outside a window whose mass is already
    ``>= top_p`` are always removed.
    """
    if top_p >= 1.0:
        return logits
    V = logits.size(-1)
    probs = torch.softmax(logits.float(), dim=-1)
    k = min(V, max(1, first_k))
    while True:
        top_probs, top_idx = torch.topk(probs, k, dim=-1)  # sorted descending
        cum = torch.cumsum(top_probs, dim=-1)
        if k == V or bool((cum[..., -1] >= top_p).all()):
            break
        k = min(V, k * 4)
    keep_sorted = (cum - top_probs) < top_p
    keep_sorted[..., 0] = True  # always keep the top token
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, top_idx, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def process_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature -> top-k -> top-p on ``[B, V]`` logits (computed in fp32).

    For greedy (``temperature == 0``) the logits are returned unchanged (as fp32):
    filtering cannot change the argmax.
    """
    logits = logits.float()
    if params.greedy:
        return logits
    logits = temperature_scale(logits, params.temperature)
    logits = apply_top_k(logits, params.top_k)
    logits = apply_top_p(logits, params.top_p)
    return logits


def sample(
    logits: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    greedy: bool = False,
) -> torch.Tensor:
    """Draw one token per row from ``softmax(logits)`` -> ``[B]`` int64.

    Exact inverse-CDF sampling: one uniform per row, ``searchsorted`` in the fp64 cumulative
    distribution. This is ~10x cheaper on CPU than ``torch.multinomial`` or the
    exponential-race trick at a 49k vocab (both draw/scan much more), and never returns a
    zero-probability (filtered, ``-inf``) token. ``greedy=True`` returns the argmax.
    """
    if greedy:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits.float(), dim=-1)
    cdf = torch.cumsum(probs, dim=-1, dtype=torch.float64)
    u = torch.rand(cdf.shape[:-1] + (1,), dtype=torch.float64, device=cdf.device, generator=generator)
    u = u * cdf[..., -1:]
    tok = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    # u can round up to the total mass -> index V; fall back to the mode (measure-zero event)
    V = probs.size(-1)
    return torch.where(tok < V, tok, torch.argmax(probs, dim=-1))
