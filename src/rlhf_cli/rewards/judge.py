"""``judge`` reward: AI feedback used live by an RL stage (direct RLAIF, Lee et al. 2023, sec. 2.3).

``{name: judge, path: JUDGE_DIR}`` (mode ``score``): the judge rates each response and the reward is the
expectation over its rating-token distribution, read from ONE forward (no sampling). The prompt asks for a
digit 0-9, because "10" is two tokens in most vocabularies (its probability is not a next-token
probability); the reward is 1 + E[digit], on the 1..10 scale of Lee et al.

``{name: judge, path: JUDGE_DIR, mode: reference, reference_field: answer}``: the judge compares the
response with the record's reference answer (the ``reference_question`` template), both orders averaged;
the reward is P(response better than the reference), in [0, 1].

Prompts are the templates of a constitution YAML (``constitution: default`` or a path), never strings in
code. Calls are batched; within one call (one RL step) each distinct (prompt, response) is judged once.
The judge model is loaded on the first call, so validating a config never loads weights.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

from .errors import RewardError
from .registry import REWARDS

MODES = ("score", "reference")
DIGITS = [str(d) for d in range(10)]


def _device_dtype(device: str, dtype: str):
    from rlhf_cli.models.loading import inference_device_dtype

    try:
        return inference_device_dtype(device, dtype)
    except ValueError as e:
        raise RewardError(f"reward 'judge': {e}") from None


@REWARDS.register("judge")
def make_judge_reward(*, path: str, mode: str = "score", reference_field: str = "answer",
                      constitution: str = "default", labels: Sequence[str] = ("A", "B"), batch_size: int = 8,
                      chat_template: bool = True, device: str = "auto",
                      dtype: str = "auto") -> Callable[..., List[float]]:
    """Reward from a judge LLM: a 1..10 expected rating (score) or P(beats the reference) (reference)."""
    from rlhf_cli.data.constitution import load_constitution
    from rlhf_cli.errors import ConfigError

    if not isinstance(path, str) or not path:
        raise RewardError("reward 'judge': 'path' must name a local model dir (the judge LLM)")
    if mode not in MODES:
        raise RewardError(f"reward 'judge': mode={mode!r}: must be one of {', '.join(MODES)}")
    if len(list(labels)) != 2:
        raise RewardError(f"reward 'judge': labels={list(labels)}: needs two labels")
    try:
        from rlhf_cli.models.loading import resolve_model_dir

        resolve_model_dir(path, key="reward judge path")
        const = load_constitution(constitution, key="reward judge constitution")
    except ConfigError as e:
        raise RewardError(str(e)) from None
    state: Dict[str, Any] = {}
    stats = {"calls": 0, "requested": 0, "judged": 0}

    def judge():
        if "judge" not in state:
            from rlhf_cli.models.judge import Judge, load_judge_model

            dev, dt = _device_dtype(device, dtype)
            try:
                model, tok = load_judge_model(path, dtype=dt, key="reward judge path")
            except ConfigError as e:
                raise RewardError(str(e)) from None
            state["judge"] = Judge(model.to(dev), tok, batch_size=int(batch_size), chat=bool(chat_template))
        return state["judge"]

    def score(keys: List[Tuple[str, str, str]]) -> List[float]:
        j = judge()
        if mode == "score":
            ids = [j.encode(const.render("score", prompt=p, response=r), const.render("score_answer"), DIGITS)
                   for p, r, _ in keys]
            return [1.0 + float(v) for v in j.expected_rating(ids, DIGITS, range(10))]
        from rlhf_cli.algos.ai_feedback import order_averaged

        la, lb = labels
        q = const.render("reference_question")
        ans = const.render("compare_answer", label_a=la, label_b=lb)
        texts = [const.render("compare", prompt=p, question=q, response_a=a, response_b=b, label_a=la, label_b=lb)
                 for first in (True, False) for p, r, ref in keys for a, b in [(r, ref) if first else (ref, r)]]
        probs, _ = j.label_probs([j.encode(t, ans, labels) for t in texts], [la, lb])
        n = len(keys)
        return order_averaged(probs[:n], probs[n:]).tolist()

    def judge_reward(prompts: Sequence[str], completions: Sequence[str], **fields: Any) -> List[float]:
        refs = [""] * len(completions)
        if mode == "reference":
            if reference_field not in fields:
                raise RewardError(f"reward 'judge' (mode reference): the records have no '{reference_field}' "
                                  f"field (set reference_field, and data.reward_fields to include it)")
            refs = [str(x) for x in fields[reference_field]]
        keys = list(zip(map(str, prompts), map(str, completions), refs))
        unique = list(dict.fromkeys(keys))  # the per-step cache: each distinct (prompt, response) judged once
        # A response equal to its reference is a tie by construction: 0.5 exactly, not judged. Judged, its two
        # orders are one text in two batch rows, whose fp32 results can differ in the last bit (0.49999997
        # on an AVX-512 host), which would turn an identical pair into a win or a loss for `eval win-rate`.
        ties = {k for k in unique if mode == "reference" and k[1] == k[2]}
        judged = [k for k in unique if k not in ties]
        stats["calls"] += 1
        stats["requested"] += len(keys)
        stats["judged"] += len(judged)
        got = {k: 0.5 for k in ties}
        got.update(zip(judged, score(judged)) if judged else ())
        return [got[k] for k in keys]

    judge_reward.stats = stats  # type: ignore[attr-defined]
    return judge_reward
