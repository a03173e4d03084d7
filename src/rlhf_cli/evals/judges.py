"""Judges for `rlhf eval win-rate`: who decides which of two answers to a prompt is better.

A judge is built from the eval's options, ``JUDGES.get(name)(opts)``, and returns an object with
``prefer(prompts, answers_a, answers_b) -> list[float]``: P(answer a is better) per prompt, 1 / 0.5 / 0 for
hard verdicts (0.5 = tie), and ``describe() -> dict`` for the report.

- ``rm``: a trained reward model (``rm=RUN_OR_DIR``, scored exactly as in training by ``RewardModelScorer``);
  a wins when ``r(a) - r(b) > tie_margin``, ties within the margin. A scalar score has no position bias.
- ``model``: a judge LLM (``judge_model=DIR``; e.g. the policy itself, as d-RLAIF does): the constitution's
  comparison question, the two label probabilities read from one forward, each pair judged with a first and
  with b first and the two averaged (position-bias control: Lee et al. 2023; Zheng et al. 2023, "Judging
  LLM-as-a-judge", sec. 3.4). It is the ``judge`` reward of the RL stages in its ``reference`` mode.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

from rlhf_cli.errors import ConfigError
from rlhf_cli.registry import Registry

JUDGES = Registry("judge")
Pairwise = Callable[[Sequence, Sequence[str], Sequence[str]], List[float]]


class RewardModelJudge:
    def __init__(self, path: str, tie_margin: float = 0.0, batch_size: int = 8):
        from rlhf_cli.models.reward_model import RewardModelScorer

        self.path, self.tie_margin = path, tie_margin
        self.scorer = RewardModelScorer(path, batch_size=batch_size)
        self.rewards_a: List[float] = []
        self.rewards_b: List[float] = []

    def prefer(self, prompts, a, b) -> List[float]:
        ra = self.scorer.score(list(prompts), list(a))
        rb = self.scorer.score(list(prompts), list(b))
        self.rewards_a, self.rewards_b = ra, rb
        return [1.0 if x - y > self.tie_margin else 0.0 if y - x > self.tie_margin else 0.5 for x, y in zip(ra, rb)]

    def describe(self) -> dict:
        n = max(len(self.rewards_a), 1)
        return {"judge": "rm", "rm": self.path, "tie_margin": self.tie_margin,
                "reward_a_mean": sum(self.rewards_a) / n, "reward_b_mean": sum(self.rewards_b) / n}


@JUDGES.register("rm", description="a reward model dir/run (rm=...): higher reward wins, ties within tie_margin")
def rm_judge(opts: dict) -> RewardModelJudge:
    if not opts.get("rm"):
        raise ConfigError("eval win-rate: judge=rm needs rm=RUN_OR_DIR (a reward model from rlhf train rm)")
    return RewardModelJudge(opts["rm"], opts.get("tie_margin", 0.0), opts.get("batch_size", 8))


class ModelJudge:
    def __init__(self, path: str, batch_size: int = 8, constitution: str = "default"):
        from rlhf_cli.rewards.judge import make_judge_reward

        self.path = path
        # P(a better than b), both presentation orders averaged inside (the judge reward's reference mode)
        self.fn = make_judge_reward(path=path, mode="reference", reference_field="other", batch_size=batch_size,
                                    constitution=constitution)
        self.probs: List[float] = []

    def prefer(self, prompts, a, b) -> List[float]:
        self.probs = list(self.fn(list(prompts), list(a), other=list(b)))
        return self.probs

    def describe(self) -> dict:
        return {"judge": "model", "judge_model": self.path,
                "p_a_better_mean": sum(self.probs) / max(len(self.probs), 1)}


@JUDGES.register("model", description="a judge LLM (judge_model=DIR): soft preference, both orders averaged")
def model_judge(opts: dict) -> ModelJudge:
    if not opts.get("judge_model"):
        raise ConfigError("eval win-rate: judge=model needs judge_model=DIR (any local causal LM, e.g. the policy)")
    return ModelJudge(opts["judge_model"], opts.get("batch_size", 8))
