"""``model`` reward: score completions with a reward model trained by the ``rm`` stage.

``{name: model, path: runs/rm/final, weight: 1.0, batch_size: 8}``. The scorer class lives in
``rlhf_cli.models.reward`` (built with the rm stage) and is imported lazily; the model itself is
loaded on the first call, so validating a config never loads weights.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence

from .errors import RewardError
from .registry import REWARDS


def _scorer_class():
    try:
        from rlhf_cli.models.reward import RewardModelScorer
    except (ImportError, AttributeError):
        raise RewardError("reward 'model' needs the rm stage (rlhf_cli.models.reward.RewardModelScorer "
                          "is not available in this install)") from None
    return RewardModelScorer


def _validate(*, path: str, **_: Any) -> None:
    if not isinstance(path, str) or not path:
        raise RewardError("reward 'model': 'path' must name a reward model dir (e.g. runs/rm/final)")


@REWARDS.register("model")
def make_model_reward(*, path: str, batch_size: int = 8, device: str = "auto",
                      dtype: str = "auto") -> Callable[..., List[float]]:
    """Reward = the reward model's scalar score of (prompt, completion)."""
    _validate(path=path)
    cls = _scorer_class()
    scorer: list = []

    def model_reward(prompts: Sequence[str], completions: Sequence[str], **fields: Any) -> List[float]:
        if not scorer:
            scorer.append(cls(path, device=device, dtype=dtype, batch_size=int(batch_size)))
        return list(scorer[0].score(list(prompts), list(completions)))

    return model_reward


make_model_reward.validate = _validate  # config time: no weights are loaded
