"""`rlhf eval win-rate model_a=RUN model_b=RUN data=prompts.jsonl judge=rm rm=RM_RUN [key=value ...]`:
how often model a's answer beats model b's on a prompt set, by a judge (see evals/judges.py).

Both models answer every prompt (chat template, rollout engine; greedy by default, ``temperature`` to
sample, same seed for both). Per prompt the judge gives s = P(a better): 1 win, 0.5 tie, 0 loss.
``win_rate = mean(s)`` (ties count half) with a bootstrap percentile interval over prompts (Efron &
Tibshirani 1993, ch. 13). ``judgements=FILE`` writes one ``{prompt, model_a, model_b, winner: a|b|tie}``
line per prompt, which ``rlhf elo`` reads.
"""
from __future__ import annotations

import json
from typing import Sequence

from rlhf_cli.config.options import parse_kv
from rlhf_cli.errors import ConfigError
from rlhf_cli.output_files import output_file, write_output

OPTIONS = {"model_a": str, "model_b": str, "data": str, "judge": str, "rm": str, "judge_model": str,
           "tie_margin": float,
           "prompt_field": str, "system": str, "limit": int, "max_new_tokens": int, "temperature": float,
           "top_p": float, "seed": int, "batch_size": int, "bootstrap": int, "ci": float, "judgements": str,
           "show": int}


def bootstrap_mean_ci(x: Sequence[float], rounds: int, ci: float, seed: int):
    import numpy as np

    a = np.asarray(x, dtype=float)
    if rounds <= 0 or len(a) == 0:
        return None, None
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, len(a), size=(rounds, len(a)))].mean(axis=1)
    q = (1.0 - ci) / 2
    return float(np.quantile(means, q)), float(np.quantile(means, 1 - q))


def answers(model: str, msgs, o) -> list:
    from rlhf_cli.models.loading import load_for_generation
    from rlhf_cli.rollout.complete import sample_texts
    from rlhf_cli.rollout.sampling import SamplingParams

    lm, tok = load_for_generation(model)
    params = SamplingParams(max_new_tokens=o["max_new_tokens"], temperature=o["temperature"], top_p=o["top_p"])
    out = sample_texts(lm, tok, msgs, 1, params, seed=o["seed"], batch_size=o["batch_size"], per_prompt_seed=False)
    return [x[0] for x in out]


def run(words: Sequence[str]) -> dict:
    from rlhf_cli.data.prompts import read_prompt_messages
    from rlhf_cli.evals.judges import JUDGES

    o = {"judge": "rm", "tie_margin": 0.0, "prompt_field": "prompt", "system": "", "limit": 0, "max_new_tokens": 128,
         "temperature": 0.0, "top_p": 1.0, "seed": 0, "batch_size": 8, "bootstrap": 2000, "ci": 0.95, "show": 0}
    o.update(parse_kv(words, OPTIONS, "eval win-rate"))
    for key in ("model_a", "model_b", "data"):
        if not o.get(key):
            raise ConfigError("eval win-rate: needs model_a=RUN_OR_DIR model_b=RUN_OR_DIR data=PROMPTS "
                              "(and judge=rm rm=RM_RUN)")
    if o["judge"] not in JUDGES:
        raise ConfigError(f"eval win-rate: judge={o['judge']}: one of {', '.join(JUDGES.names())}")
    if not 0 < o["ci"] < 1:
        raise ConfigError(f"eval win-rate: ci={o['ci']}: must be in (0, 1)")
    battles = output_file(o["judgements"], [o["data"]], "eval win-rate", "judgements") if o.get("judgements") else None
    judge = JUDGES.get(o["judge"])(o)
    prompts = read_prompt_messages(o["data"], o["prompt_field"], o["system"] or None, o["limit"])
    msgs = [m for _, m in prompts]
    a, b = answers(o["model_a"], msgs, o), answers(o["model_b"], msgs, o)
    s = judge.prefer(msgs, a, b)
    lo, hi = bootstrap_mean_ci(s, o["bootstrap"], o["ci"], o["seed"])
    wins, losses = sum(x > 0.5 for x in s), sum(x < 0.5 for x in s)
    if battles:
        write_output(battles, "".join(
            json.dumps({"prompt": p, "model_a": o["model_a"], "model_b": o["model_b"],
                        "winner": "a" if x > 0.5 else "b" if x < 0.5 else "tie",
                        "annotator": f"judge:{o['judge']}", "response_a": ra, "response_b": rb}) + "\n"
            for (p, _), x, ra, rb in zip(prompts, s, a, b)))
    return {"model_a": o["model_a"], "model_b": o["model_b"], "data": o["data"], "prompts": len(s),
            "wins": wins, "ties": len(s) - wins - losses, "losses": losses, "win_rate": sum(s) / len(s),
            "ci_low": lo, "ci_high": hi, "ci": o["ci"], **judge.describe(),
            "examples": [{"prompt": p, "a": x, "b": y, "p_a_better": v}
                         for (p, _), x, y, v in list(zip(prompts, a, b, s))[: o["show"]]]}
