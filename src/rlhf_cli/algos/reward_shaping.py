"""Post-processing of sequence scores before the KL shaping (``ppo.shaped_rewards``); every option is
a defence against reward hacking and is off unless the stage asks for it.

The order for a step (``[B]`` tensors), as ``post_process_scores`` applies it::

    s = reduce_ensemble(rm_scores, reduce)               # [K, B] -> [B], several reward models
    s = s + rule_scores                                  # hybrid rule + model rewards (weighted sums)
    s = length_penalty(s, lengths, coef, max_len=...)    # optional
    moments.update(all_reduce(masked_moments(s, finished)))  # running statistics over all ranks
    s = moments.normalize(s)  /  normalize_scores(s, rm_mean, rm_std)   # optional
    s = clip_scores(s, clip)                             # optional
    s = apply_missing_eos_penalty(s, finished, penalty)  # LAST: the configured score, in final units

The missing-EOS penalty is the last word (OpenAI lm-human-preferences, the N+ details): applied before
the others, a truncated response's fixed score would be shifted, rescaled and clipped with the rest and
could end up the batch's highest. Truncated responses are also kept out of the running statistics when
the penalty replaces their score (the statistics describe the scores that are normalised).

``ENSEMBLE_REDUCERS`` maps ``mean | min`` to ``fn(scores[K, B]) -> [B]``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch

from rlhf_cli.registry import Registry

from .logprobs import Moments, masked_moments, moments_mean_var

ENSEMBLE_REDUCERS = Registry("reward ensemble reduce")


@ENSEMBLE_REDUCERS.register("mean")
def ensemble_mean(scores: torch.Tensor) -> torch.Tensor:
    """Mean over K reward models (Coste et al. 2024, "Reward Model Ensembles Help Mitigate
    Overoptimization", mean optimisation): ``[K, B] -> [B]``."""
    return scores.mean(dim=0)


@ENSEMBLE_REDUCERS.register("min")
def ensemble_min(scores: torch.Tensor) -> torch.Tensor:
    """Worst case over K reward models (Coste et al. 2024, worst-case optimisation, WCO): the policy
    is paid only what every model agrees on.  ``[K, B] -> [B]``."""
    return scores.amin(dim=0)


def reduce_ensemble(scores: Union[torch.Tensor, Sequence[torch.Tensor]], reduce: str = "mean") -> torch.Tensor:
    """Combine the scores of K reward models for the same B responses with ``ENSEMBLE_REDUCERS[reduce]``.

    ``scores``: ``[K, B]`` or a sequence of K ``[B]`` tensors.  The models should be on a common scale
    (normalise each first, e.g. with its stored statistics) or ``min`` picks the lowest-scale model.
    """
    s = torch.stack(list(scores)) if not torch.is_tensor(scores) else scores
    if s.dim() != 2 or s.shape[0] < 1:
        raise ValueError(f"ensemble scores must be [K, B] with K >= 1, got {tuple(s.shape)}")
    return ENSEMBLE_REDUCERS.get(reduce)(s.float())


def apply_missing_eos_penalty(scores: torch.Tensor, finished: torch.Tensor, penalty: float) -> torch.Tensor:
    """The EOS trick (Huang et al. 2024, "The N+ implementation details of RLHF with PPO"; OpenAI
    lm-human-preferences' ``penalty_reward_value``): a response that never ended (hit the length
    budget without EOS / stop string) gets the score ``penalty`` (e.g. -1.0) INSTEAD of its score,
    so the policy cannot collect reward with unfinished text.  (TRL subtracts a penalty instead; the
    replacement also removes whatever the reward model said about a cut-off text.)  Choose
    ``penalty`` below the usual score range: a score lower than ``penalty`` is RAISED to it.

    ``scores``: ``[B]``; ``finished``: bool ``[B]``.  Returns a new ``[B]`` float tensor.
    """
    if finished.shape != scores.shape:
        raise ValueError(f"finished {tuple(finished.shape)} must match scores {tuple(scores.shape)}")
    s = scores.float()
    return torch.where(finished.to(device=s.device, dtype=torch.bool), s, torch.full_like(s, float(penalty)))


def length_penalty(scores: torch.Tensor, lengths: torch.Tensor, coef: float, *, max_len: int,
                   target_len: int = 0) -> torch.Tensor:
    """Linear length penalty against length exploitation of reward models (the length-penalty
    intervention of Singhal et al. 2023, "A Long Way to Go: Investigating Length Correlations in
    RLHF": the reward minus a multiple of the output length):

    ``scores - coef * max(length - target_len, 0) / max_len``

    Length is measured in response tokens and expressed as a fraction of the generation budget
    ``max_len`` (max_new_tokens), so ``coef`` is in reward units: a response using the whole budget
    loses ``coef`` (less the ``target_len`` allowance, which is free).
    """
    if max_len < 1:
        raise ValueError(f"length_penalty needs max_len >= 1, got {max_len}")
    over = (lengths.to(scores.device).float() - float(target_len)).clamp(min=0.0)
    return scores.float() - float(coef) * over / float(max_len)


def clip_scores(scores: torch.Tensor, clip: Optional[float]) -> torch.Tensor:
    """Clamp scores to ``[-clip, clip]`` (reward clipping, e.g. OpenRLHF ``reward_clip_range``;
    bounds the damage of a reward-model outlier).  ``None`` returns the scores unchanged."""
    if clip is None:
        return scores
    if not clip > 0:
        raise ValueError(f"reward clip must be > 0, got {clip}")
    return scores.clamp(-float(clip), float(clip))


def normalize_scores(scores: torch.Tensor, mean: float, std: float, *, shift_mean: bool = True,
                     eps: float = 1e-8) -> torch.Tensor:
    """``(scores - mean) / (std + eps)`` (``scores / (std + eps)`` when ``shift_mean=False``) with
    given statistics: a reward model's stored ones (Ziegler et al. 2019 normalise the RM to mean 0,
    std 1 on the initial policy's samples) or ``RunningMoments``'."""
    s = scores.float()
    if shift_mean:
        s = s - float(mean)
    return s / (float(std) + eps)


class RunningMoments:
    """Running mean / variance of all scores seen so far (reward normalisation, as TRL's
    ``RunningMoments`` / ``use_score_scaling``), mergeable across ranks.

    ``update`` takes the batch's ``(sum, sum of squares, count)`` (``logprobs.masked_moments``,
    summed over ranks by the caller), so all ranks hold the same state; batches are merged into
    ``(count, mean, M2)`` with the parallel form of Welford's algorithm (Chan, Golub & LeVeque 1979),
    in float64.  ``std`` is the unbiased sample std.  ``state_dict`` holds three plain floats
    (JSON-serialisable, exact resume).
    """

    def __init__(self) -> None:
        self.count = 0.0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, moments: Moments) -> None:
        """Merge a batch given by its (global) ``(sum, sum of squares, count)``."""
        n_b = float(moments[2])
        if n_b <= 0:
            return
        mean_b, var_b = moments_mean_var(moments, unbiased=False)
        self.merge(n_b, mean_b, var_b * n_b)

    def merge(self, count: float, mean: float, m2: float) -> None:
        """Chan et al. merge of another set's ``(count, mean, M2 = sum of squared deviations)``."""
        count, mean, m2 = float(count), float(mean), float(m2)
        if count <= 0:
            return
        n = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / n
        self.m2 += m2 + delta * delta * self.count * count / n
        self.count = n

    @property
    def var(self) -> float:
        """Unbiased variance of everything seen (0 before two values)."""
        return self.m2 / (self.count - 1.0) if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def normalize(self, scores: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
        """``normalize_scores`` with the running statistics."""
        return normalize_scores(scores, self.mean, self.std, shift_mean=shift_mean, eps=eps)

    def state_dict(self) -> Dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.count, self.mean, self.m2 = float(state["count"]), float(state["mean"]), float(state["m2"])


def post_process_scores(scores: torch.Tensor, finished: torch.Tensor, lengths: torch.Tensor, *,
                        missing_eos_penalty: Optional[float] = None, length_coef: float = 0.0, max_len: int = 1,
                        moments: Optional[RunningMoments] = None,
                        reduce: Callable[[Moments], Moments] = lambda m: m,
                        clip: Optional[float] = None) -> torch.Tensor:
    """The sequence scores a policy is trained on, in the module's order: ``length_penalty`` (when
    ``length_coef``), running normalisation (when ``moments`` is given: updated with this batch's
    statistics, summed over processes by ``reduce``, e.g. ``strategy.all_reduce``), ``clip_scores``, and
    last ``apply_missing_eos_penalty`` (when ``missing_eos_penalty`` is not None), so a response without
    EOS scores exactly the penalty whatever else is on.  ``[B]`` in, new ``[B]`` float tensor out."""
    s = scores.float()
    finished = finished.to(device=s.device, dtype=torch.bool)
    if length_coef:
        s = length_penalty(s, lengths, length_coef, max_len=max_len)
    if moments is not None:
        counted = finished if missing_eos_penalty is not None else torch.ones_like(finished)
        moments.update(reduce(masked_moments(s, counted)))
        s = moments.normalize(s)
    s = clip_scores(s, clip)
    if missing_eos_penalty is not None:
        s = apply_missing_eos_penalty(s, finished, missing_eos_penalty)
    return s
