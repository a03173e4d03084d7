"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath) with verifiable rewards,
plus the DAPO (Yu et al. 2025) and Dr. GRPO (Liu et al. 2025) options.

One step, on every process: take ``prompts_per_step`` prompts (a global, seeded order, so a resumed
run continues exactly), sample ``num_generations`` responses each, score them with the reward
functions, turn rewards into group-relative advantages, then do ``num_iterations`` optimizer updates
of the clipped surrogate (old log-probs kept) over micro-batches. Losses are normalised by GLOBAL
token / sequence counts, so the gradient does not depend on how the batch is split.
"""
from __future__ import annotations

import time
from typing import Dict, List

import torch

from rlhf_cli.algos.advantages import ADVANTAGES, group_has_signal
from rlhf_cli.algos.logprobs import masked_moments
from rlhf_cli.data.packing import micro_batches
from rlhf_cli.models.loading import load_causal_lm
from rlhf_cli.rl.experience import Sample, batched_logprobs, build_experience, loss_normalizer, policy_loss
from rlhf_cli.rl.rollout import PromptStream, Roller, sample_metrics, setup_rl
from rlhf_cli.training.loop import run_steps
from rlhf_cli.training.reference import Reference
from rlhf_cli.training.runtime import RunContext, export_final, write_manifest


def overlong_penalty(length: int, finished: bool, g) -> float:
    """DAPO soft overlong punishment: 0 up to max_new_tokens - buffer, then linear down to -penalty."""
    if g.overlong != "penalty":
        return 0.0
    if g.overlong_buffer <= 0:
        return 0.0 if finished else -g.overlong_penalty
    start = g.max_new_tokens - g.overlong_buffer
    return -g.overlong_penalty * min(1.0, max(0.0, (length - start) / g.overlong_buffer))


def _signal(group: List[Sample]) -> bool:
    return bool(group_has_signal(torch.tensor([x.reward for x in group]), len(group))[0])


def rollout_step(ctx: RunContext, roller: Roller, stream: PromptStream, step: int):
    """Groups for this step (after dynamic sampling) and the first round's groups (for reward metrics)."""
    cfg, s = ctx.cfg, ctx.strategy
    P = cfg.grpo.prompts_per_step

    def draw():
        idx = stream.take(P * s.world_size)  # every rank advances the global cursor identically
        return idx[s.rank * P:(s.rank + 1) * P]

    first = roller.groups(draw(), step, 0)
    if not cfg.grpo.dynamic_sampling:
        return first, first, 0
    kept = [gr for gr in first if _signal(gr)]
    dropped = [gr for gr in first if not _signal(gr)]
    rounds = 0
    # rounds are decided collectively: generation may be a collective (ZeRO-3 gathers)
    while rounds < cfg.grpo.max_resample_rounds and s.all_reduce([max(0, P - len(kept))], "max")[0] > 0:
        rounds += 1
        for gr in roller.groups(draw(), step, rounds):
            (kept if _signal(gr) else dropped).append(gr)
    kept = kept[:P] + dropped[:max(0, P - len(kept))]  # top up with zero-signal groups if still short
    return kept, first, rounds


def reward_metrics(ctx: RunContext, first: List[List[Sample]], trained: List[List[Sample]]) -> Dict[str, float]:
    """Reward statistics of the first round's groups; ``zero_signal_fraction`` of those, and
    ``trained_zero_signal_fraction`` of the groups the update uses (after dynamic sampling's top-up)."""
    out = sample_metrics(ctx, [x for gr in first for x in gr])
    zero, groups, zero_t, groups_t = ctx.strategy.all_reduce([sum(not _signal(gr) for gr in first), len(first),
                                                              sum(not _signal(gr) for gr in trained), len(trained)])
    out["zero_signal_fraction"] = zero / groups
    out["trained_zero_signal_fraction"] = zero_t / groups_t
    return out


def update(ctx: RunContext, engine, ref, exp) -> Dict[str, float]:
    """num_iterations optimizer updates over this step's experience; returns averaged metrics."""
    cfg, s, g = ctx.cfg, ctx.strategy, ctx.cfg.grpo
    mbs = cfg.train.micro_batch_size
    if g.num_iterations > 1:
        exp.old_logps = batched_logprobs(engine, exp, mbs, g.temperature, g.logprob_chunk_size)
    if g.kl_coef > 0:
        exp.ref_logps = batched_logprobs(ref, exp, mbs, g.temperature, g.logprob_chunk_size)
    normalizer = loss_normalizer(s, exp, g.loss_agg)
    sums: Dict[str, float] = {}
    for it in range(g.num_iterations):
        for rows in micro_batches(len(exp), mbs):
            loss, st = policy_loss(engine, exp.select(rows), g, normalizer, with_entropy=it == 0)
            engine.backward(loss * engine.loss_scale)
            engine.step()
            for k, v in st.items():
                sums[k] = sums.get(k, 0.0) + v
    keys = sorted(sums)
    red = dict(zip(keys, s.all_reduce([sums[k] for k in keys])))
    tok_all = max(red.pop("tokens"), 1.0)  # tokens over all iterations
    out = {"loss": red.pop("loss") / g.num_iterations,
           "clip_low_fraction": red.pop("clip_low") / tok_all, "clip_high_fraction": red.pop("clip_high") / tok_all}
    if "kl" in red:
        out["kl"] = red.pop("kl") / tok_all
    if "entropy" in red:
        out["entropy"] = red.pop("entropy") / (tok_all / g.num_iterations)  # measured in the first pass
    return out


def advantages_for(ctx: RunContext, groups: List[List[Sample]]) -> torch.Tensor:
    """This process's advantages; an estimator that takes batch statistics gets those of every process."""
    g = ctx.cfg.grpo
    rewards = torch.tensor([x.reward for gr in groups for x in gr], dtype=torch.float32)
    meta = ADVANTAGES.meta(g.advantage)
    options = {arg: g[key] for arg, key in meta.get("options", {}).items()}
    if meta.get("batch_moments"):
        options["batch_moments"] = ctx.strategy.all_reduce(masked_moments(rewards))
    return ADVANTAGES.get(g.advantage)(rewards, g.num_generations, **options)


def run(ctx: RunContext) -> dict:
    cfg, s, g, d = ctx.cfg, ctx.strategy, ctx.cfg.grpo, ctx.cfg.data
    tokenizer, reward, prompts, total = setup_rl(ctx, g)
    model = load_causal_lm(cfg.model, tokenizer)
    reference = Reference(ctx, tokenizer, needed=g.kl_coef > 0)
    if g.kl_coef == 0:
        ctx.log("kl_coef=0: no reference model loaded")
    engine = s.prepare(model, total * g.num_iterations)
    ref = reference.bind(engine)
    state = ctx.resume()
    start, cursor = (state["step"], state["prompt_cursor"]) if state else (0, 0)
    stream = PromptStream(len(prompts), cfg.seed, d.shuffle, cursor)
    roller = Roller(ctx, engine, tokenizer, reward, prompts, g,
                    adjust=lambda r, n, fin: r + overlong_penalty(n, fin, g))

    def one_step(step: int) -> Dict[str, float]:
        t0 = time.time()
        roller.gen_time = roller.score_time = 0.0
        roller.gen_tokens = 0
        groups, first, rounds = rollout_step(ctx, roller, stream, step)
        metrics = reward_metrics(ctx, first, groups)
        adv = advantages_for(ctx, groups)
        exp = build_experience([x for gr in groups for x in gr], adv, tokenizer.pad_token_id,
                               g.overlong == "mask", s.device, d.padding_free)
        t1 = time.time()
        metrics.update(update(ctx, engine, ref, exp))
        gen_t, score_t = s.all_reduce([roller.gen_time, roller.score_time], "max")
        gen_tok = s.all_reduce([roller.gen_tokens])[0]
        metrics.update({"lr": engine.lr(), "grad_norm": engine.grad_norm(), "resample_rounds": rounds,
                        "gen_tokens_per_s": gen_tok / max(gen_t, 1e-9), "time/generation": gen_t,
                        "time/scoring": score_t, "time/update": time.time() - t1, "step_time": time.time() - t0})
        return metrics

    engine.train()
    summary = run_steps(ctx, start, total, one_step,
                        info=lambda m: f"reward {m['reward']:.3f}  len {m['response_length']:.0f}  "
                                       f"{m['step_time']:.1f}s/step",
                        state=lambda: {"prompt_cursor": stream.cursor})
    summary.update(reference_model=ref is not None)
    final = export_final(ctx, engine, tokenizer)
    write_manifest(ctx, summary, {"data.path": d.path})
    ctx.log(f"Done: {final}")
    return summary
