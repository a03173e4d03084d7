"""``math`` reward: is the completion's final answer mathematically equal to the reference? Checked the way
the field checks it, with Hugging Face's ``math-verify`` (Kydlicek et al. 2025; the verifier of Open R1 and
TRL's accuracy reward): the answer is extracted from ``\\boxed{...}``, LaTeX or plain expressions, both sides
are parsed to sympy and compared symbolically and numerically, so ``\\frac{1}{2}`` equals ``0.5`` and
``\\boxed{3}`` does not equal ``33``; units and LaTeX spacing are normalised.

The reference is the record's ``answer_field`` (a MATH ``solution`` with its ``\\boxed{}`` answer works as
is: the answer is extracted from it). An unparseable reference scores 0 (warned once). The ``math`` extra
installs math-verify: ``pip install 'rlhf-cli[math]'``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Sequence

from .errors import RewardError, dataset_field
from .registry import REWARDS

log = logging.getLogger(__name__)


def require_math_verify():
    try:
        import math_verify
    except ImportError:
        raise RewardError("the math reward needs math-verify: pip install 'rlhf-cli[math]'") from None
    return math_verify


def answers_equal(reference: str, completion: str) -> bool:
    """``math_verify.verify(parse(reference), parse(completion))`` (False when either side has no answer)."""
    mv = require_math_verify()
    gold, pred = mv.parse(str(reference)), mv.parse(str(completion))
    return bool(gold) and bool(pred) and bool(mv.verify(gold, pred))


@REWARDS.register("math")
def make_math_reward(*, answer_field: str = "answer") -> Callable[..., List[float]]:
    """1.0 when the completion's answer equals the reference (math-verify), else 0.0."""
    if not isinstance(answer_field, str) or not answer_field:
        raise RewardError(f"math: answer_field must be a non-empty string, got {answer_field!r}")
    warned: List[bool] = []

    def math_reward(prompts: Sequence[str], completions: Sequence[str], **fields: Any) -> List[float]:
        mv = require_math_verify()
        refs = dataset_field(fields, answer_field, "math", "answer_field")
        scores = []
        for comp, ref in zip(completions, refs):
            gold = mv.parse(str(ref))
            if not gold:
                if not warned:
                    log.warning("math: unparseable reference answer %r (scored 0)", str(ref)[:80])
                    warned.append(True)
                scores.append(0.0)
                continue
            pred = mv.parse(str(comp))
            scores.append(1.0 if pred and mv.verify(gold, pred) else 0.0)
        return scores

    return math_reward


make_math_reward.pure = True  # only checks its options: config-time validation may call it
