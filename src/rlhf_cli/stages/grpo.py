"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath) with verifiable rewards,
plus the DAPO (Yu et al. 2025) and Dr. GRPO (Liu et al. 2025) options.

One step, on every process: take ``prompts_per_step`` prompts (a global, seeded order, so a resumed
run continues exactly), sample ``num_generations`` responses each, score them with the reward
functions, turn rewards into group-relative advantages, then do ``num_iterations`` optimizer updates
of the clipped surrogate (old log-probs kept) over micro-batches. Losses are normalised by GLOBAL
token / sequence counts, so the gradient does not depend on how the batch is split.
"""
from __future__ import annotations

import math
import time
from typing import Dict, List, Sequence

import torch

from rlhf_cli.algos.advantages import ADVANTAGES, group_has_signal
from rlhf_cli.data.packing import epoch_order, micro_batches
from rlhf_cli.data.prompts import PromptExample, load_prompt_data, reward_fields
from rlhf_cli.models.loading import load_causal_lm, load_tokenizer
from rlhf_cli.models.lora import DisabledAdapterReference, lora_enabled
from rlhf_cli.rollout.experience import Sample, batched_logprobs, build_experience, policy_loss
from rlhf_cli.rollout.generate import generate
from rlhf_cli.rollout.sampling import SamplingParams
from rlhf_cli.stages.runtime import Interrupted, Progress, RunContext, export_final, write_manifest


class PromptStream:
    """Endless seeded order over the prompts; ``take(n)`` returns the next n global indices."""

    def __init__(self, n: int, seed: int, shuffle: bool, cursor: int = 0):
        self.n, self.seed, self.shuffle, self.cursor = n, seed, shuffle, cursor
        self._epoch, self._order = -1, []

    def take(self, count: int) -> List[int]:
        out = []
        for _ in range(count):
            epoch, k = divmod(self.cursor, self.n)
            if epoch != self._epoch:
                self._epoch, self._order = epoch, epoch_order(self.n, self.seed, epoch, self.shuffle)
            out.append(self._order[k])
            self.cursor += 1
        return out


def eos_ids(tokenizer, model) -> List[int]:
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    return sorted(i for i in ids if i is not None)


def overlong_penalty(length: int, finished: bool, g) -> float:
    """DAPO soft overlong punishment: 0 up to max_new_tokens - buffer, then linear down to -penalty."""
    if g.overlong != "penalty":
        return 0.0
    if g.overlong_buffer <= 0:
        return 0.0 if finished else -g.overlong_penalty
    start = g.max_new_tokens - g.overlong_buffer
    return -g.overlong_penalty * min(1.0, max(0.0, (length - start) / g.overlong_buffer))


class Roller:
    """Generates and scores groups of responses for one process."""

    def __init__(self, ctx: RunContext, engine, tokenizer, reward, prompts: Sequence[PromptExample]):
        self.ctx, self.engine, self.tok, self.reward, self.prompts = ctx, engine, tokenizer, reward, prompts
        g = ctx.cfg.grpo
        self.params = SamplingParams(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                                     top_k=g.top_k, stop_strings=tuple(g.stop_strings))
        self.eos = eos_ids(tokenizer, engine.module)
        self.gen_time = self.score_time = 0.0
        self.gen_tokens = 0

    def groups(self, idx: Sequence[int], step: int, rnd: int) -> List[List[Sample]]:
        cfg, s, G = self.ctx.cfg, self.ctx.strategy, self.ctx.cfg.grpo.num_generations
        exs = [self.prompts[i] for i in idx]
        flat = [e.ids for e in exs for _ in range(G)]
        gen = torch.Generator(device=s.device)
        gen.manual_seed((cfg.seed * 1_000_003 + step) * 65_537 + s.rank * 131 + rnd)  # per (seed, step, rank, round)
        t0 = time.time()
        with s.gathered_params(self.engine.module):
            out = generate(self.engine.module, flat, self.params, eos_token_ids=self.eos, pad_id=self.tok.pad_token_id,
                           tokenizer=self.tok, batch_size=cfg.grpo.generation_batch_size or None, generator=gen)
        t1 = time.time()
        texts = out.texts(self.tok)
        fields = {k: [v for v in vals for _ in range(G)] for k, vals in reward_fields(exs).items()}
        scored = self.reward([e.text for e in exs for _ in range(G)], texts, **fields)
        self.score_time += time.time() - t1
        self.gen_time += t1 - t0
        lens = out.response_lengths.tolist()
        self.gen_tokens += sum(lens)
        resp, fin = out.response_ids.tolist(), out.finished.tolist()
        samples = []
        for i in range(len(flat)):
            total = scored.total[i] + overlong_penalty(lens[i], fin[i], cfg.grpo)
            samples.append(Sample(flat[i], resp[i][:lens[i]], fin[i], total,
                                  {k: v[i] for k, v in scored.per_function.items()}))
        return [samples[k * G:(k + 1) * G] for k in range(len(exs))]


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


def reward_metrics(ctx: RunContext, first: List[List[Sample]]) -> Dict[str, float]:
    flat = [x for gr in first for x in gr]
    keys = sorted(flat[0].per_function)
    vals = [sum(x.reward for x in flat), sum(x.reward ** 2 for x in flat)]
    for k in keys:
        vals += [sum(x.per_function[k] for x in flat), sum(x.per_function[k] ** 2 for x in flat)]
    vals += [len(flat), sum(not _signal(gr) for gr in first), len(first),
             sum(len(x.response_ids) for x in flat), sum(not x.finished for x in flat)]
    r = ctx.strategy.all_reduce(vals)
    n = r[-5]

    def mean_std(s1, s2):
        mean = s1 / n
        return mean, math.sqrt(max(0.0, s2 / n - mean ** 2))

    out = {}
    out["reward"], out["reward_std"] = mean_std(r[0], r[1])
    for j, k in enumerate(keys):
        out[f"reward/{k}"], out[f"reward/{k}_std"] = mean_std(r[2 + 2 * j], r[3 + 2 * j])
    out.update(zero_signal_fraction=r[-4] / r[-3], response_length=r[-2] / n, truncated_fraction=r[-1] / n)
    return out


def update(ctx: RunContext, engine, ref, exp) -> Dict[str, float]:
    """num_iterations optimizer updates over this step's experience; returns averaged metrics."""
    cfg, s, g = ctx.cfg, ctx.strategy, ctx.cfg.grpo
    mbs = cfg.train.micro_batch_size
    if g.num_iterations > 1:
        exp.old_logp = batched_logprobs(engine, exp, mbs, g.temperature, g.logprob_chunk_size)
    if g.kl_coef > 0:
        exp.ref_logp = batched_logprobs(ref, exp, mbs, g.temperature, g.logprob_chunk_size)
    local = [float(exp.response_mask.sum()), float(len(exp))]
    tokens, seqs = s.all_reduce(local)
    normalizer = max(tokens, 1.0) if g.loss_agg == "token_mean" else max(seqs, 1.0)
    scale = s.world_size * cfg.train.grad_accum  # undoes DeepSpeed's 1/GAS and the DP gradient average
    sums: Dict[str, float] = {}
    for it in range(g.num_iterations):
        for rows in micro_batches(len(exp), mbs):
            loss, st = policy_loss(engine, exp.select(rows), g, normalizer, with_entropy=it == 0)
            s.backward(loss * scale)
            s.step()
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
        out["entropy"] = red.pop("entropy") / max(tokens, 1.0)
    return out


def advantages_for(groups: List[List[Sample]], g) -> torch.Tensor:
    rewards = torch.tensor([x.reward for gr in groups for x in gr], dtype=torch.float32)
    fn = ADVANTAGES.get(g.advantage)
    if g.advantage == "grpo":
        return fn(rewards, g.num_generations, scale_rewards=g.scale_rewards, eps=g.adv_eps)
    if g.advantage == "dr_grpo":
        return fn(rewards, g.num_generations, eps=g.adv_eps)
    return fn(rewards, g.num_generations)


def run(ctx: RunContext) -> dict:
    cfg, s, g = ctx.cfg, ctx.strategy, ctx.cfg.grpo
    from omegaconf import OmegaConf

    from rlhf_cli.rollout.rewards import build_reward

    tokenizer = load_tokenizer(cfg.model)
    reward = build_reward(OmegaConf.to_container(cfg.reward.functions, resolve=True))
    d = cfg.data
    prompts, st = load_prompt_data(d.path, d, tokenizer, max_prompt_tokens=d.max_length - g.max_new_tokens,
                                   limit=d.limit)
    per_step = g.prompts_per_step * s.world_size
    total = (cfg.train.max_steps if cfg.train.max_steps > 0
             else max(1, math.ceil(cfg.train.epochs * len(prompts) / per_step)))
    ctx.log(f"GRPO data: {st.records} records ({st.skipped} bad, {st.too_long} over the prompt budget) -> "
            f"{len(prompts)} prompts; {per_step} prompts x {g.num_generations} generations per step, {total} steps; "
            f"rewards {reward}; precision {s.precision}, {s.world_size} process(es), ZeRO-{cfg.engine.zero_stage}")
    model = load_causal_lm(cfg.model, tokenizer)
    ref = None
    if g.kl_coef > 0 and not lora_enabled(cfg.model.lora):
        ref = s.prepare_frozen(load_causal_lm(cfg.model, tokenizer))
        ctx.log(f"Reference model loaded (kl_coef={g.kl_coef}, {g.kl_estimator})")
    else:
        ctx.log("kl_coef=0: no reference model loaded")
    engine = s.prepare(model, total * g.num_iterations)
    if g.kl_coef > 0 and lora_enabled(cfg.model.lora):  # reference = the policy with its adapter disabled
        ref = DisabledAdapterReference(engine)
    state = ctx.resume()
    start, cursor = (state["step"], state["prompt_cursor"]) if state else (0, 0)
    stream = PromptStream(len(prompts), cfg.seed, d.shuffle, cursor)
    roller = Roller(ctx, engine, tokenizer, reward, prompts)
    progress = Progress(s.is_main and cfg.log.progress, total, start, "grpo")
    summary: Dict[str, float] = {}
    t_start = time.time()
    engine.train()
    step = start
    try:
        while step < total:
            t0 = time.time()
            roller.gen_time = roller.score_time = 0.0
            roller.gen_tokens = 0
            groups, first, rounds = rollout_step(ctx, roller, stream, step)
            metrics = reward_metrics(ctx, first)
            adv = advantages_for(groups, g)
            exp = build_experience([x for gr in groups for x in gr], adv, tokenizer.pad_token_id,
                                   g.overlong == "mask", s.device)
            t1 = time.time()
            metrics.update(update(ctx, engine, ref, exp))
            step += 1
            gen_t, score_t = s.all_reduce([roller.gen_time, roller.score_time], "max")
            gen_tok = s.all_reduce([roller.gen_tokens])[0]
            dt = time.time() - t0
            metrics.update({"lr": s.lr(), "grad_norm": s.grad_norm(), "resample_rounds": rounds,
                            "gen_tokens_per_s": gen_tok / max(gen_t, 1e-9), "time/generation": gen_t,
                            "time/scoring": score_t, "time/update": time.time() - t1, "step_time": dt})
            if step % cfg.train.log_every == 0 or step == total:
                ctx.metrics.write(step, metrics)
            progress.update(step, f"reward {metrics['reward']:.3f}  len {metrics['response_length']:.0f}  "
                                  f"{dt:.1f}s/step")
            summary = {k: v for k, v in metrics.items() if v is not None}
            stop = ctx.should_stop()
            if stop or (cfg.train.save_every and step % cfg.train.save_every == 0 and step < total):
                s.save_checkpoint(ctx.ckpt_root, step, {"total_steps": total, "prompt_cursor": stream.cursor},
                                  cfg.train.keep_checkpoints)
            if stop:
                raise Interrupted(f"stopped at step {step}; checkpoint saved, rerun the same command to resume")
    finally:
        progress.close()
    summary.update(steps=step, train_seconds_this_run=time.time() - t_start, reference_model=ref is not None)
    final = export_final(ctx, engine.module, tokenizer)
    write_manifest(ctx, summary, {"data.path": d.path})
    ctx.log(f"Done: {final}")
    return summary
