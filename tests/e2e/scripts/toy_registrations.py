"""One toy entry of every registry kind, each a real (small) algorithm, registered WITHOUT editing any
stage: importing this module is all it takes. Every call appends a JSON line {"entry": ..., ...} to the
file named by $TOY_CALLS (when set) so a test can see which entry ran and with which options.
``unregister_all()`` removes them again (``Registry.unregister``).
"""
import json
import os

import torch
import torch.nn.functional as F

from rlhf_cli.algos.advantages import ADVANTAGES
from rlhf_cli.algos.logprobs import masked_sum
from rlhf_cli.algos.policy import KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES
from rlhf_cli.algos.preference import DPO_LOSSES
from rlhf_cli.algos.reward_model import RM_LOSSES
from rlhf_cli.bench import BENCHES
from rlhf_cli.evals import EVALS
from rlhf_cli.rewards.registry import REWARDS

ENTRIES = {DPO_LOSSES: "toy_hinge", RM_LOSSES: "toy_rm_hinge", ADVANTAGES: "toy_centered",
           LOSS_AGGREGATIONS: "toy_seq_sum", KL_ESTIMATORS: "toy_sq", REWARDS: "toy_length",
           POLICY_LOSSES: "toy_vanilla",
           EVALS: "toy_eval", BENCHES: "toy_bench"}


def record(entry: str, **info) -> None:
    path = os.environ.get("TOY_CALLS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"entry": entry, **info}) + "\n")


@DPO_LOSSES.register("toy_hinge", options=("label_smoothing",))
def toy_hinge(pc, pr, rc, rr, *, beta, label_smoothing=0.0):
    """SLiC-HF hinge on the DPO margin (Zhao et al. 2023, "SLiC-HF", eq. 2 with the reference as in
    Rafailov et al. 2023): ``max(0, 1 - beta * h)``, smoothed toward the flipped pair by label_smoothing."""
    record("toy_hinge", label_smoothing=label_smoothing, beta=beta)
    h = (pc - rc) - (pr - rr)
    losses = (1 - label_smoothing) * F.relu(1 - beta * h) + label_smoothing * F.relu(1 + beta * h)
    return losses, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


@RM_LOSSES.register("toy_rm_hinge", options=("centering_coef",))
def toy_rm_hinge(scores, ranks, valid, centering_coef=0.0):
    """Pairwise margin-ranking loss ``max(0, 1 - (r_c - r_r))`` (Herbrich et al. 2000) for pairs whose
    candidate 0 is preferred, plus ``centering_coef * (r_c + r_r)^2`` (Eisenstein et al. 2023)."""
    record("toy_rm_hinge", centering_coef=centering_coef, shape=list(scores.shape))
    assert bool((ranks[:, 0] < ranks[:, 1]).all()) and bool(valid.all())
    return F.relu(1 - (scores[:, 0] - scores[:, 1])) + centering_coef * (scores[:, 0] + scores[:, 1]) ** 2


@ADVANTAGES.register("toy_centered", options={"eps": "adv_eps"})
def toy_centered(inputs, eps=1e-4):
    """Group-mean baseline without std scaling (Dr. GRPO, Liu et al. 2025, §3.1): ``r_i - mean_group(r)``."""
    group_size = inputs.num_generations
    record("toy_centered", eps=eps, group_size=group_size)
    g = inputs.scores.detach().double().view(-1, group_size)
    return (g - g.mean(1, keepdim=True)).float().view(-1, 1) * inputs.mask, None


@POLICY_LOSSES.register("toy_vanilla", options={"clip_low": "clip_low"})
def toy_vanilla(logps, old_logps, advantages, mask, clip_low=0.2):
    """The unclipped importance-weighted policy gradient ``-ratio * A`` (Williams 1992), ``clip_low``
    recorded only to show a loss reading its options."""
    record("toy_vanilla", clip_low=clip_low, shape=list(logps.shape))
    ratio = torch.exp(logps - old_logps.detach())
    never = torch.zeros_like(ratio, dtype=torch.bool)
    return -ratio * advantages.detach(), {"ratio": ratio.detach(), "clip_low": never, "clip_high": never}


@LOSS_AGGREGATIONS.register("toy_seq_sum")
def toy_seq_sum(per_token, mask, *, max_len, normalizer=None):
    """Sum over a sequence's tokens divided by the constant budget ``max_len``, then averaged over sequences
    (Dr. GRPO, Liu et al. 2025, §3.1)."""
    record("toy_seq_sum", max_len=max_len, normalizer=float(normalizer) if normalizer is not None else None)
    per_seq = masked_sum(per_token, mask, dim=-1) / float(max_len)
    return per_seq.sum() / normalizer if normalizer is not None else per_seq.mean()


@KL_ESTIMATORS.register("toy_sq")
def toy_sq(logp, ref_logp):
    """(logp - ref_logp)^2: twice Schulman's k2 (http://joschu.net/blog/kl-approx.html), >= 0."""
    record("toy_sq", shape=list(logp.shape))
    return (logp - ref_logp) ** 2


@REWARDS.register("toy_length")
def toy_length(scale: float = 1.0):
    """Reward ``scale * len(completion) / 100`` (a length bonus)."""
    def fn(prompts, completions):
        record("toy_length", scale=scale, n=len(completions))
        return [scale * len(c) / 100 for c in completions]

    return fn


@EVALS.register("toy_eval", description="echo the key=value words back (toy)")
def toy_eval(words):
    record("toy_eval", words=list(words))
    return {"eval": "toy_eval", "words": dict(w.split("=", 1) for w in words)}


@BENCHES.register("toy_bench", options={"n": int})
def toy_bench(peak_gflops, opts):
    record("toy_bench", opts=opts)
    x = torch.randn(64, 64)
    return {"bench": "toy_bench", "peak_gflops_positive": peak_gflops > 0, "trace": float((x @ x.T).trace() > 0),
            "opts": opts}


def unregister_all() -> None:
    for registry, name in ENTRIES.items():
        registry.unregister(name)
