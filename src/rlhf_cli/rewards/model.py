"""``model`` reward: score completions with a reward model trained by the ``rm`` stage.

``{name: model, path: runs/rm/final, weight: 1.0, batch_size: 8}``. The scorer class lives in
``rlhf_cli.models.reward_model`` (built with the rm stage) and is imported lazily; the model itself is
loaded on the first call, so validating a config never loads weights.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence, Union

from .errors import RewardError
from .registry import REWARDS


def _scorer_class():
    try:
        from rlhf_cli.models.reward_model import RewardModelScorer
    except (ImportError, AttributeError):
        raise RewardError("reward 'model' needs the rm stage (rlhf_cli.models.reward_model.RewardModelScorer "
                          "is not available in this install)") from None
    return RewardModelScorer


def _validate(*, path: Union[str, Sequence[str]], reduce: str = "mean", **_: Any) -> None:
    paths = [path] if isinstance(path, str) else list(path or [])
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise RewardError("reward 'model': 'path' must name a reward model dir (e.g. runs/rm/final) or a list")
    from rlhf_cli.algos.reward_shaping import ENSEMBLE_REDUCERS

    if reduce not in ENSEMBLE_REDUCERS:
        raise RewardError(f"reward 'model': reduce={reduce!r}: must be one of {', '.join(ENSEMBLE_REDUCERS.names())}")


@REWARDS.register("model")
def make_model_reward(*, path: Union[str, Sequence[str]], batch_size: int = 8, device: str = "auto",
                      dtype: str = "auto", reduce: str = "mean", normalize: bool = False) -> Callable[..., List[float]]:
    """Reward = the reward model's scalar score of (prompt, completion).

    ``path`` may list several reward models: an ensemble whose scores are reduced by ``reduce`` (``mean``,
    or ``min``: the most pessimistic model, against reward hacking; Coste et al. 2024). ``normalize``
    puts each model's scores on mean 0 / std 1 with the statistics its rm run stored in
    reward_config.json. ``device: cpu`` keeps the reward model(s) in CPU memory (offload)."""
    _validate(path=path, reduce=reduce)
    paths = [path] if isinstance(path, str) else list(path)
    cls = _scorer_class()
    scorers: list = []

    def model_reward(prompts: Sequence[str], completions: Sequence[str], **fields: Any) -> List[float]:
        import torch

        from rlhf_cli.algos.reward_shaping import normalize_scores, reduce_ensemble

        if not scorers:
            scorers.extend(cls(p, device=device, dtype=dtype, batch_size=int(batch_size)) for p in paths)
        per_model = []
        for sc in scorers:
            s = torch.tensor(sc.score(list(prompts), list(completions)), dtype=torch.float32)
            if normalize:
                if "score_mean" not in sc.cfg:
                    raise RewardError(f"reward 'model': normalize=true but {sc.root} has no stored score "
                                      "statistics (retrain it with this version of the rm stage)")
                s = normalize_scores(s, sc.cfg["score_mean"], sc.cfg["score_std"])
            per_model.append(s)
        return reduce_ensemble(per_model, reduce).tolist()

    return model_reward


make_model_reward.validate = _validate  # config time: no weights are loaded
