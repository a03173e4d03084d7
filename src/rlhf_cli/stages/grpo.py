"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath) with verifiable rewards,
plus the DAPO (Yu et al. 2025) and Dr. GRPO (Liu et al. 2025) options, as a configuration of the RL core.

One step, on every process: take ``prompts_per_step`` prompts (a global, seeded order, so a resumed
run continues exactly), sample ``num_generations`` responses each, score them with the reward
functions (DAPO's overlong penalty and dynamic sampling here), then the core: group-relative advantages
(``grpo.advantage``), and ``grpo.epochs`` optimizer updates of the policy loss (``grpo.policy_loss``) with
the KL to the reference in the loss. Losses are normalised by GLOBAL token / sequence counts, so the
gradient does not depend on how the batch is split.
"""
from __future__ import annotations

import time
from typing import Dict, List

import torch

from rlhf_cli.algos.advantages import ADVANTAGES, group_has_signal
from rlhf_cli.algos.policy import POLICY_LOSSES
from rlhf_cli.models.loading import load_causal_lm
from rlhf_cli.rl.algorithm import Algorithm, registered_options
from rlhf_cli.rl.experience import Sample, make_experience
from rlhf_cli.rl.prompts import PromptStream
from rlhf_cli.rl.rollout import Rollout, sample_metrics
from rlhf_cli.rl.setup import setup_rl
from rlhf_cli.rl.update import PolicyUpdate
from rlhf_cli.training.loop import run_steps
from rlhf_cli.training.reference import Reference
from rlhf_cli.training.runtime import RunContext, export_final, write_manifest


def algorithm(grpo) -> Algorithm:
    """GRPO in the RL core's terms (``rl/algorithm.py``)."""
    return Algorithm(
        section=grpo, advantage=grpo.advantage, advantage_options=registered_options(ADVANTAGES, grpo.advantage, grpo),
        policy_loss=grpo.policy_loss,
        policy_loss_options=registered_options(POLICY_LOSSES, grpo.policy_loss, grpo),
        kl_in="loss", kl_coef=grpo.kl_coef, kl_estimator=grpo.kl_estimator,
        # one update per rollout is exactly on-policy; more keep the first pass's log-probs for the ratio
        old_logprobs="recompute" if grpo.epochs > 1 else "current", epochs=grpo.epochs,
        mask_truncated=grpo.overlong == "mask")


def overlong_penalty(length: int, finished: bool, grpo) -> float:
    """DAPO soft overlong punishment: 0 up to max_new_tokens - buffer, then linear down to -penalty."""
    if grpo.overlong != "penalty":
        return 0.0
    if grpo.overlong_buffer <= 0:
        return 0.0 if finished else -grpo.overlong_penalty
    start = grpo.max_new_tokens - grpo.overlong_buffer
    return -grpo.overlong_penalty * min(1.0, max(0.0, (length - start) / grpo.overlong_buffer))


def _signal(group: List[Sample]) -> bool:
    return bool(group_has_signal(torch.tensor([x.reward for x in group]), len(group))[0])


def rollout_step(ctx: RunContext, rollout: Rollout, stream: PromptStream, step: int):
    """Groups for this step (after dynamic sampling) and the first round's groups (for reward metrics)."""
    cfg, strategy = ctx.cfg, ctx.strategy
    P = cfg.grpo.prompts_per_step

    def draw():
        return stream.draw(P, strategy.rank, strategy.world_size)

    first = rollout.sample_groups(draw(), step, 0)
    if not cfg.grpo.dynamic_sampling:
        return first, first, 0
    kept = [gr for gr in first if _signal(gr)]
    dropped = [gr for gr in first if not _signal(gr)]
    rounds = 0
    # rounds are decided collectively: generation may be a collective (ZeRO-3 gathers)
    while rounds < cfg.grpo.max_resample_rounds and strategy.all_reduce([max(0, P - len(kept))], "max")[0] > 0:
        rounds += 1
        for gr in rollout.sample_groups(draw(), step, rounds):
            (kept if _signal(gr) else dropped).append(gr)
    kept = kept[:P] + dropped[:max(0, P - len(kept))]  # top up with zero-signal groups if still short
    return kept, first, rounds


def reward_metrics(ctx: RunContext, first: List[List[Sample]], trained: List[List[Sample]]) -> Dict[str, float]:
    """Reward statistics of the first round's groups; ``zero_signal_fraction`` of those, and
    ``trained_zero_signal_fraction`` of the groups the update uses (after dynamic sampling's top-up)."""
    out = sample_metrics(ctx, [x for gr in first for x in gr])
    red = ctx.strategy.all_reduce_named({"zero": sum(not _signal(gr) for gr in first), "groups": len(first),
                                         "zero_trained": sum(not _signal(gr) for gr in trained),
                                         "groups_trained": len(trained)})
    out["zero_signal_fraction"] = red["zero"] / red["groups"]
    out["trained_zero_signal_fraction"] = red["zero_trained"] / red["groups_trained"]
    return out


def run(ctx: RunContext) -> dict:
    cfg, strategy, grpo, data = ctx.cfg, ctx.strategy, ctx.cfg.grpo, ctx.cfg.data
    algo = algorithm(grpo)
    tokenizer, reward, prompts, total = setup_rl(ctx, grpo)
    model = load_causal_lm(cfg.model, tokenizer)
    reference = Reference(ctx, tokenizer, needed=grpo.kl_coef > 0)
    if grpo.kl_coef == 0:
        ctx.log("kl_coef=0: no reference model loaded")
    engine = strategy.prepare(model, total * grpo.epochs)
    ref = reference.bind(engine)
    state = ctx.resume()
    start, cursor = (state["step"], state["prompt_cursor"]) if state else (0, 0)
    stream = PromptStream(len(prompts), cfg.seed, data.shuffle, cursor)
    rollout = Rollout(ctx, engine, tokenizer, reward, prompts, grpo,
                      adjust=lambda r, n, fin: r + overlong_penalty(n, fin, grpo))
    update = PolicyUpdate(ctx, algo, engine)

    def one_step(step: int) -> Dict[str, float]:
        t0 = time.time()
        rollout.start_step()
        groups, first, rounds = rollout_step(ctx, rollout, stream, step)
        metrics = reward_metrics(ctx, first, groups)
        samples = [x for gr in groups for x in gr]
        scores = torch.tensor([x.reward for x in samples], dtype=torch.float32)
        t_forwards = time.time()
        exp, _ = make_experience(ctx, algo, samples, scores, tokenizer.pad_token_id, engine, ref=ref,
                                 kl_coef=grpo.kl_coef)
        t1 = time.time()
        metrics.update(update(exp, step))
        timing = rollout.step_metrics()
        timing["time/scoring"] += t1 - t_forwards  # rewards + the reference's / old policy's forwards
        metrics.update({"lr": engine.lr(), "grad_norm": engine.grad_norm(), "resample_rounds": rounds,
                        **engine.fp16_metrics(), **timing, "time/update": time.time() - t1,
                        "step_time": time.time() - t0})
        return metrics

    engine.train()
    summary = run_steps(ctx, start, total, one_step,
                        info=lambda m: f"reward {m['reward']:.3f}  len {m['response_length']:.0f}  "
                                       f"{m['step_time']:.1f}s/step",
                        state=lambda: {"prompt_cursor": stream.cursor})
    summary.update(reference_model=ref is not None)
    final = export_final(ctx, engine, tokenizer)
    write_manifest(ctx, summary, {"data.path": data.path})
    ctx.log(f"Done: {final}")
    return summary
