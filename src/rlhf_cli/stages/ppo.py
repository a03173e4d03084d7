"""PPO for RLHF, the third stage of InstructGPT (Ouyang et al. 2022; Ziegler et al. 2019; Huang et al. 2024,
"The N+ implementation details of RLHF with PPO").

Four models: the actor (policy) and the critic (a value head, initialised from the reward model by
default) are trainable engines; the reference and the reward model(s) are frozen. One step, on every
process:

1. rollout: ``prompts_per_step`` prompts x ``num_generations`` responses from the actor (shared engine);
2. score: the reward registry (rule rewards, reward models, plugins), then optional anti-hacking
   post-processing: the EOS trick, a length penalty, running normalisation, clipping;
3. no-grad forwards: the reference's per-token log-probs and the critic's values (and, with
   ``ppo.old_logprobs=recompute``, the rollout policy's; else the sampler's own, saved while generating),
   each micro-batch one padding-free row (``data.padding_free``); the per-token reward is
   ``-kl_coef * KL_t`` plus the score at the last response token;
4. GAE advantages (whitened over all processes) and returns = advantages + values;
5. ``epochs`` passes over the rollout in ``mini_batches`` optimizer steps: the clipped surrogate (+ an
   entropy bonus, + ``ptx_coef`` x the SFT loss on ``ptx_data``: PPO-ptx, InstructGPT eq. 2) for the actor,
   the clipped value loss for the critic; optional early stop on the approx-KL to the rollout policy.

Losses are normalised by GLOBAL token (or sequence) counts of each mini-batch, so the gradient does not
depend on how a mini-batch is split over micro-batches and processes.
"""
from __future__ import annotations

import copy
import json
import time
from typing import Dict, List, Optional

import torch

from rlhf_cli.algos.advantages import gae
from rlhf_cli.algos.kl_control import build_kl_controller
from rlhf_cli.algos.logprobs import masked_moments, masked_sum
from rlhf_cli.algos.policy import KL_ESTIMATORS, aggregate_loss, clipped_surrogate
from rlhf_cli.algos.ppo import (
    approx_kl,
    explained_variance_from_moments,
    ppo_total_loss,
    shaped_rewards,
    value_loss,
    whiten,
)
from rlhf_cli.algos.reward_shaping import RunningMoments, post_process_scores
from rlhf_cli.data.packing import collate, micro_batches
from rlhf_cli.models.loading import load_causal_lm
from rlhf_cli.models.reward_model import build_reward_model
from rlhf_cli.rl.experience import (
    Experience,
    Sample,
    batched,
    build_experience,
    loss_normalizer,
    response_logprobs,
    response_values,
)
from rlhf_cli.rl.rollout import PromptStream, Roller, sample_metrics, setup_rl
from rlhf_cli.training.loop import run_steps
from rlhf_cli.training.reference import Reference
from rlhf_cli.training.runtime import RunContext, export_final, write_manifest


def trained_scores(ctx: RunContext, samples: List[Sample], moments: RunningMoments) -> torch.Tensor:
    """The sequence scores the policy is trained on: the reward functions' total through
    ``reward_shaping.post_process_scores`` (length penalty, running normalisation over all processes,
    clipping, then the EOS trick last)."""
    p = ctx.cfg.ppo
    return post_process_scores(
        torch.tensor([x.reward for x in samples], dtype=torch.float32),
        torch.tensor([x.finished for x in samples], dtype=torch.bool),
        torch.tensor([len(x.response_ids) for x in samples], dtype=torch.float32),
        missing_eos_penalty=p.missing_eos_penalty, length_coef=p.length_penalty, max_len=p.max_new_tokens,
        moments=moments if p.reward_norm == "running" else None, reduce=ctx.strategy.all_reduce,
        clip=p.reward_clip)


class PTXStream:
    """PPO-ptx batches: the SFT loss rows, drawn in a seeded order that resume reproduces."""

    def __init__(self, ctx: RunContext, tokenizer, cursor: int = 0):
        from omegaconf import OmegaConf

        from rlhf_cli.config.stages import SFTDataConfig
        from rlhf_cli.data.packing import build_rows
        from rlhf_cli.data.sft import load_sft_examples

        cfg = ctx.cfg
        dcfg = OmegaConf.structured(SFTDataConfig(path=cfg.ppo.ptx_data, max_length=cfg.data.max_length))
        examples, _ = load_sft_examples(cfg.ppo.ptx_data, dcfg, tokenizer)
        self.rows = build_rows(examples, cfg.data.max_length, packing=True)
        self.stream = PromptStream(len(self.rows), cfg.seed + 1, True, cursor)
        self.ctx, self.pad_id = ctx, tokenizer.pad_token_id

    def take(self, n_micro: int):
        """``n_micro`` collated micro-batches for this process and the global loss-token count."""
        s, mbs = self.ctx.strategy, self.ctx.cfg.train.micro_batch_size
        idx = self.stream.take(n_micro * mbs * s.world_size)  # every rank advances the cursor identically
        mine = idx[s.rank * n_micro * mbs:(s.rank + 1) * n_micro * mbs]
        batches = [collate([self.rows[i] for i in mine[k:k + mbs]], self.pad_id, True).to(s.device)
                   for k in range(0, len(mine), mbs)]
        tokens = s.all_reduce([float(sum(b.num_loss_tokens for b in batches))])[0]
        return batches, max(tokens, 1.0)


def ptx_loss(actor, batch, tokens: float, chunk_size: int) -> torch.Tensor:
    """SFT negative log-likelihood of one ptx micro-batch, divided by the global ptx token count."""
    from rlhf_cli.algos.logprobs import token_logprobs
    from rlhf_cli.models.forward import lm_logits

    logits = lm_logits(actor, batch.input_ids, batch.position_ids, batch.attention_mask)
    return -token_logprobs(logits, batch.labels, chunk_size).sum() / tokens


class PPOStep:
    """Experience making and the PPO update for one process (state that resumes: the KL controller and
    the running reward moments)."""

    def __init__(self, ctx: RunContext, actor, critic, ref, tokenizer, roller: Roller, stream: PromptStream,
                 ptx: Optional[PTXStream]):
        p = ctx.cfg.ppo
        self.ctx, self.actor, self.critic, self.ref, self.tok = ctx, actor, critic, ref, tokenizer
        self.roller, self.stream, self.ptx = roller, stream, ptx
        if p.kl_controller == "adaptive":
            from rlhf_cli.config.stage_ppo import check_kl_horizon

            check_kl_horizon(ctx.cfg, ctx.strategy.world_size)
        self.kl_ctl = build_kl_controller(p.kl_controller, p.kl_coef, p.target_kl, p.kl_horizon)
        self.moments = RunningMoments()
        self.rollout_logprobs = p.old_logprobs == "rollout" or (p.old_logprobs == "auto"
                                                                and ctx.strategy.precision == "fp32")

    def state(self) -> Dict:
        return {"prompt_cursor": self.stream.cursor, "kl_controller": self.kl_ctl.state_dict(),
                "reward_moments": self.moments.state_dict(),
                "ptx_cursor": self.ptx.stream.cursor if self.ptx else 0}

    def load_state(self, state: Dict) -> None:
        self.stream.cursor = state["prompt_cursor"]
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.moments.load_state_dict(state["reward_moments"])
        if self.ptx:
            self.ptx.stream.cursor = state.get("ptx_cursor", 0)

    # ---- 1-4: experience ----------------------------------------------------------------------------
    def draw(self) -> List[int]:
        s, P = self.ctx.strategy, self.ctx.cfg.ppo.prompts_per_step
        idx = self.stream.take(P * s.world_size)  # every rank advances the global cursor identically
        return idx[s.rank * P:(s.rank + 1) * P]

    @torch.no_grad()
    def experience(self, step: int):
        cfg, s, p = self.ctx.cfg, self.ctx.strategy, self.ctx.cfg.ppo
        samples = [x for gr in self.roller.groups(self.draw(), step, 0) for x in gr]
        t0 = time.time()
        metrics = sample_metrics(self.ctx, samples)
        scores = trained_scores(self.ctx, samples, self.moments).to(s.device)
        exp = build_experience(samples, torch.zeros(len(samples)), self.tok.pad_token_id, False, s.device,
                               cfg.data.padding_free)
        mbs, temp, chunk = cfg.train.micro_batch_size, p.temperature, p.logprob_chunk_size
        self.actor.eval()
        if self.rollout_logprobs:
            exp.old_logps = exp.rollout_logps
        else:
            exp.old_logps = batched(lambda mb: response_logprobs(self.actor, mb, temp, chunk)[0], exp, mbs)
        exp.ref_logps = batched(lambda mb: response_logprobs(self.ref, mb, temp, chunk)[0], exp, mbs)
        exp.old_values = batched(lambda mb: response_values(self.critic, mb), exp, mbs)
        self.actor.train()
        mask = exp.response_mask
        kl = KL_ESTIMATORS.get(p.kl_estimator)(exp.old_logps, exp.ref_logps) * mask
        rewards, non_score = shaped_rewards(scores, kl, mask, self.kl_ctl.kl_coef)
        adv, exp.returns = gae(rewards, exp.old_values, mask, p.gamma, p.lam)
        if p.whiten_advantages:
            adv = whiten(adv, mask, s.all_reduce(masked_moments(adv, mask)))
        exp.advantages = adv
        n, kl_sum, score_sum, shaped_sum, eos_missing = s.all_reduce(
            [len(exp), float(masked_sum(kl, mask)), float(scores.sum()), float((scores + non_score).sum()),
             float(sum(not x.finished for x in samples))])
        ret_m, res_m = masked_moments(exp.returns, mask), masked_moments(exp.returns - exp.old_values, mask)
        red = s.all_reduce([*ret_m, *res_m, float(masked_sum(exp.old_values, mask))])
        metrics.update({"score": score_sum / n, "reward_shaped": shaped_sum / n, "kl": kl_sum / n,
                        "kl_coef": self.kl_ctl.kl_coef, "missing_eos_fraction": eos_missing / n,
                        "returns_mean": red[0] / max(red[2], 1.0), "values_mean": red[6] / max(red[2], 1.0),
                        "explained_variance": explained_variance_from_moments(red[0:3], red[3:6])})
        self.kl_ctl.update(kl_sum / n, n_steps=int(n))  # the next step's kl_coef
        return exp, samples, scores, metrics, time.time() - t0

    # ---- 5: update ----------------------------------------------------------------------------------
    def update(self, exp: Experience, step: int) -> Dict[str, float]:
        cfg, s, p = self.ctx.cfg, self.ctx.strategy, self.ctx.cfg.ppo
        n_rows = len(exp)
        per_mini = n_rows // p.mini_batches
        sums: Dict[str, float] = {}
        epochs_done, stop = 0, False
        for epoch in range(p.epochs):
            g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + step) * 131 + epoch)
            order = torch.randperm(n_rows, generator=g).tolist()
            for k in range(p.mini_batches):
                mini = exp.select(order[k * per_mini:(k + 1) * per_mini])
                stats = self.mini_batch(mini, with_entropy=epoch == 0)
                for key, v in stats.items():
                    sums[key] = sums.get(key, 0.0) + v
                if p.target_approx_kl > 0 and stats["approx_kl_sum"] / max(stats["tokens"], 1.0) > p.target_approx_kl:
                    stop = True
                    break
            epochs_done += 1
            if stop:
                break
        keys = sorted(sums)
        red = dict(zip(keys, s.all_reduce([sums[k] for k in keys])))
        tok, minis = max(red["tokens"], 1.0), max(red["mini_batches"] / s.world_size, 1.0)
        out = {"policy_loss": red["policy_loss"] / minis, "value_loss": red["value_loss"] / minis,
               "clip_low_fraction": red["clip_low"] / tok, "clip_high_fraction": red["clip_high"] / tok,
               "value_clip_fraction": red["value_clip"] / tok, "approx_kl": red["approx_kl_sum"] / tok,
               "ppo_epochs": epochs_done}
        if "entropy" in red:
            out["entropy"] = red["entropy"] / max(red["entropy_tokens"], 1.0)
        if "ptx_loss" in red:
            out["ptx_loss"] = red["ptx_loss"] / minis
        return out

    def mini_batch(self, mini: Experience, with_entropy: bool) -> Dict[str, float]:
        """One optimizer step of actor and critic over a mini-batch (its micro-batches accumulate)."""
        cfg, s, p = self.ctx.cfg, self.ctx.strategy, self.ctx.cfg.ppo
        mbs = cfg.train.micro_batch_size
        norm = loss_normalizer(s, mini, p.loss_agg)
        chunks = micro_batches(len(mini), mbs)
        ptx_batches, ptx_tokens = self.ptx.take(len(chunks)) if self.ptx and p.ptx_coef > 0 else ([], 1.0)
        stats = {"mini_batches": 1.0, "policy_loss": 0.0, "value_loss": 0.0, "tokens": 0.0, "clip_low": 0.0,
                 "clip_high": 0.0, "value_clip": 0.0, "approx_kl_sum": 0.0}
        want_entropy = with_entropy or p.entropy_coef > 0
        for j, rows in enumerate(chunks):
            mb = mini.select(rows)
            m = mb.response_mask
            logps, ent = response_logprobs(self.actor, mb, p.temperature, p.logprob_chunk_size,
                                          with_entropy=want_entropy, entropy_grad=p.entropy_coef > 0)
            per_token, st = clipped_surrogate(logps, mb.old_logps, mb.advantages, p.clip_low, p.clip_high)
            pg = aggregate_loss(per_token, m, p.loss_agg, max_len=p.max_new_tokens, normalizer=norm)
            entropy = aggregate_loss(ent, m, p.loss_agg, max_len=p.max_new_tokens, normalizer=norm) \
                if p.entropy_coef > 0 else None
            ptx = ptx_loss(self.actor, ptx_batches[j], ptx_tokens, p.logprob_chunk_size) if ptx_batches else None
            total = ppo_total_loss(pg, ptx_loss=ptx, ptx_coef=p.ptx_coef if ptx is not None else 0.0,
                                   entropy=entropy, entropy_coef=p.entropy_coef)
            self.actor.backward(total * self.actor.loss_scale)
            self.actor.step()
            values = response_values(self.critic, mb)
            vf, vst = value_loss(values, mb.old_values, mb.returns, m, p.value_clip, loss_agg=p.loss_agg,
                                 max_len=p.max_new_tokens, normalizer=norm)
            self.critic.backward(p.vf_coef * vf * self.critic.loss_scale)
            self.critic.step()
            stats["policy_loss"] += float(pg.detach())
            stats["value_loss"] += float(vf.detach())
            stats["tokens"] += float(m.sum())
            stats["clip_low"] += float((st["clip_low"].float() * m).sum())
            stats["clip_high"] += float((st["clip_high"].float() * m).sum())
            stats["value_clip"] += float(vst["value_clip"].float().sum())
            stats["approx_kl_sum"] += float((approx_kl(logps, mb.old_logps) * m).sum())
            if ent is not None and with_entropy:
                stats["entropy"] = stats.get("entropy", 0.0) + float((ent.detach() * m).sum())
                stats["entropy_tokens"] = stats.get("entropy_tokens", 0.0) + float(m.sum())
            if ptx is not None:
                stats["ptx_loss"] = stats.get("ptx_loss", 0.0) + float(ptx.detach())
        # each process holds its share of the mini-batch's global means: summing over processes gives them
        return stats


def write_samples(ctx: RunContext, step: int, samples: List[Sample], scores: torch.Tensor, tokenizer) -> None:
    """A few prompt -> response -> reward lines in samples.jsonl (rank 0's own samples)."""
    p = ctx.cfg.ppo
    if not ctx.strategy.is_main or not p.sample_every or step % p.sample_every:
        return
    with open(ctx.out / "samples.jsonl", "a") as f:
        for x, sc in list(zip(samples, scores.tolist()))[:p.samples_per_write]:
            f.write(json.dumps({"step": step, "prompt": tokenizer.decode(x.prompt_ids, skip_special_tokens=True),
                                "response": tokenizer.decode(x.response_ids, skip_special_tokens=True),
                                "reward": x.reward, "score": sc, "per_function": x.per_function,
                                "finished": x.finished}) + "\n")


def build_critic(cfg, tokenizer):
    """A value model: the reward model (head kept) or the policy with a fresh, seeded value head."""
    from rlhf_cli.config.stage_ppo import critic_source

    mcfg = copy.deepcopy(cfg.model)
    source = critic_source(cfg)
    if source is not None:
        mcfg.path = source
    return build_reward_model(mcfg, tokenizer, cfg.seed)


def run(ctx: RunContext) -> dict:
    cfg, s, p, d = ctx.cfg, ctx.strategy, ctx.cfg.ppo, ctx.cfg.data
    tokenizer, reward, prompts, total = setup_rl(ctx, p, extra=f"; critic from {cfg.critic.init}")
    reference = Reference(ctx, tokenizer)
    optimizer_steps = total * p.epochs * p.mini_batches
    actor = s.prepare(load_causal_lm(cfg.model, tokenizer), optimizer_steps, name="actor")
    ref = reference.bind(actor)
    critic = s.prepare(build_critic(cfg, tokenizer), optimizer_steps, name="critic", optim=cfg.critic.optim)
    stream = PromptStream(len(prompts), cfg.seed, d.shuffle)
    ptx = PTXStream(ctx, tokenizer) if p.ptx_coef > 0 else None
    roller = Roller(ctx, actor, tokenizer, reward, prompts, p)
    ppo = PPOStep(ctx, actor, critic, ref, tokenizer, roller, stream, ptx)
    state = ctx.resume()
    start = state["step"] if state else 0
    if state:
        ppo.load_state(state)

    def one_step(step: int) -> Dict[str, float]:
        t0 = time.time()
        roller.gen_time = roller.score_time = 0.0
        roller.gen_tokens = 0
        exp, samples, scores, metrics, forward_time = ppo.experience(step)
        t1 = time.time()
        metrics.update(ppo.update(exp, step))
        gen_t, score_t = s.all_reduce([roller.gen_time, roller.score_time], "max")
        gen_tok = s.all_reduce([roller.gen_tokens])[0]
        metrics.update({"lr": actor.lr(), "grad_norm": actor.grad_norm(), "critic_lr": critic.lr(),
                        "critic_grad_norm": critic.grad_norm(), "gen_tokens_per_s": gen_tok / max(gen_t, 1e-9),
                        "time/generation": gen_t, "time/scoring": score_t + forward_time,
                        "time/update": time.time() - t1, "step_time": time.time() - t0})
        write_samples(ctx, step + 1, samples, scores, tokenizer)
        return metrics

    actor.train()
    critic.train()
    summary = run_steps(ctx, start, total, one_step, state=ppo.state,
                        info=lambda m: f"reward {m['reward']:.3f}  kl {m['kl']:.3f}  {m['step_time']:.1f}s/step")
    final = export_final(ctx, actor, tokenizer)
    export_final(ctx, critic, tokenizer, subdir="critic")
    write_manifest(ctx, summary, {"data.path": d.path, "ppo.ptx_data": p.ptx_data})
    ctx.log(f"Done: {final} (critic: {ctx.out / 'critic'})")
    return summary
