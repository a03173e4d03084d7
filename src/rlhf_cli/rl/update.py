"""The policy update of every RL stage, written once: ``algo.epochs`` passes over a step's experience, each
split into ``algo.mini_batches`` optimizer steps of micro-batches; per micro-batch the teacher-forced
log-probs, the algorithm's registered policy loss (``algos.policy.POLICY_LOSSES``) aggregated with GLOBAL
counts (so the gradient does not depend on how a step is split over micro-batches and processes), the KL
term where the algorithm puts it in the loss, an entropy bonus and PPO-ptx when asked, and the critic's
clipped value loss when there is a critic. Metrics are reduced by name over every process.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from rlhf_cli.algos.policy import KL_ESTIMATORS, POLICY_LOSSES, aggregate_loss
from rlhf_cli.algos.ppo import approx_kl, ppo_total_loss, value_loss
from rlhf_cli.data.packing import micro_batches
from rlhf_cli.rl.algorithm import Algorithm
from rlhf_cli.rl.experience import Experience, loss_normalizer, response_logprobs, response_values
from rlhf_cli.rl.ptx import PTXStream, ptx_loss
from rlhf_cli.training.runtime import RunContext


class PolicyUpdate:
    """The update of ``actor`` (and ``critic``) for one process; ``ptx``: PPO-ptx's SFT batches."""

    def __init__(self, ctx: RunContext, algo: Algorithm, actor, critic=None, ptx: Optional[PTXStream] = None):
        self.ctx, self.algo, self.actor, self.critic, self.ptx = ctx, algo, actor, critic, ptx
        self.loss_fn = POLICY_LOSSES.get(algo.policy_loss)

    def __call__(self, exp: Experience, step: int) -> Dict[str, float]:
        """Every pass and mini-batch of one step; returns the step's update metrics."""
        cfg, algo = self.ctx.cfg, self.algo
        n_rows = len(exp)
        per_mini = n_rows // algo.mini_batches
        sums: Dict[str, float] = {}
        epochs_done, stop = 0, False
        for epoch in range(algo.epochs):
            order = list(range(n_rows))
            if algo.shuffle:  # seeded per (seed, step, pass): a resumed run takes the same mini-batches
                g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + step) * 131 + epoch)
                order = torch.randperm(n_rows, generator=g).tolist()
            for k in range(algo.mini_batches):
                stats = self.mini_batch(exp.select(order[k * per_mini:(k + 1) * per_mini]), first_pass=epoch == 0)
                for key, v in stats.items():
                    sums[key] = sums.get(key, 0.0) + v
                if algo.target_approx_kl > 0 and stats["approx_kl"] / max(stats["tokens"], 1.0) > algo.target_approx_kl:
                    stop = True
                    break
            epochs_done += 1
            if stop:
                break
        return self.reduce(sums, epochs_done)

    def reduce(self, sums: Dict[str, float], epochs_done: int) -> Dict[str, float]:
        """Sums over micro-batches, passes and processes -> the step's metrics (each process holds its share
        of every mini-batch's global mean, so the sum over processes is that mean)."""
        strategy = self.ctx.strategy
        red = strategy.all_reduce_named(sums)
        tokens, minis = max(red["tokens"], 1.0), max(red["mini_batches"] / strategy.world_size, 1.0)
        out = {"policy_loss": red["policy_loss"] / minis, "clip_low_fraction": red["clip_low"] / tokens,
               "clip_high_fraction": red["clip_high"] / tokens, "approx_kl": red["approx_kl"] / tokens,
               "update_epochs": epochs_done}
        if "kl_loss" in red:
            out["kl_loss"] = red["kl_loss"] / tokens
        if "entropy" in red:
            out["entropy"] = red["entropy"] / max(red["entropy_tokens"], 1.0)
        if "value_loss" in red:
            out.update(value_loss=red["value_loss"] / minis, value_clip_fraction=red["value_clip"] / tokens)
        if "ptx_loss" in red:
            out["ptx_loss"] = red["ptx_loss"] / minis
        return out

    def mini_batch(self, mini: Experience, first_pass: bool) -> Dict[str, float]:
        """One optimizer step of the actor (and critic) over a mini-batch; its micro-batches accumulate."""
        cfg, algo, sec = self.ctx.cfg, self.algo, self.algo.section
        norm = loss_normalizer(self.ctx.strategy, mini, sec.loss_agg)
        chunks = micro_batches(len(mini), cfg.train.micro_batch_size)
        ptx_batches, ptx_tokens = self.ptx.take(len(chunks)) if self.ptx and algo.ptx_coef > 0 else ([], 1.0)
        stats = {"mini_batches": 1.0, "policy_loss": 0.0, "tokens": 0.0, "clip_low": 0.0, "clip_high": 0.0,
                 "approx_kl": 0.0}
        with_entropy = first_pass or algo.entropy_coef > 0  # logged from the first pass; trained on if coef > 0
        kl_in_loss = algo.kl_in == "loss" and algo.kl_coef > 0
        for j, rows in enumerate(chunks):
            mb = mini.select(rows)
            m = mb.response_mask
            logps, ent = response_logprobs(self.actor, mb, sec.temperature, sec.logprob_chunk_size,
                                           with_entropy=with_entropy, entropy_grad=algo.entropy_coef > 0)
            old = mb.old_logps if mb.old_logps is not None else logps.detach()
            per_token, st = self.loss_fn(logps, old, mb.advantages, m, **algo.policy_loss_options)
            if kl_in_loss:
                kl = KL_ESTIMATORS.get(algo.kl_estimator)(logps, mb.ref_logps)
                per_token = per_token + algo.kl_coef * kl
                stats["kl_loss"] = stats.get("kl_loss", 0.0) + float((kl.detach() * m).sum())
            pg = aggregate_loss(per_token, m, sec.loss_agg, max_len=sec.max_new_tokens, normalizer=norm)
            entropy = aggregate_loss(ent, m, sec.loss_agg, max_len=sec.max_new_tokens, normalizer=norm) \
                if algo.entropy_coef > 0 else None
            ptx = ptx_loss(self.actor, ptx_batches[j], ptx_tokens, sec.logprob_chunk_size) if ptx_batches else None
            total = ppo_total_loss(pg, ptx_loss=ptx, ptx_coef=algo.ptx_coef if ptx is not None else 0.0,
                                   entropy=entropy, entropy_coef=algo.entropy_coef)
            self.actor.backward(total)
            self.actor.step()
            if self.critic is not None:
                values = response_values(self.critic, mb)
                vf, vst = value_loss(values, mb.old_values, mb.returns, m, algo.value_clip, loss_agg=sec.loss_agg,
                                     max_len=sec.max_new_tokens, normalizer=norm)
                self.critic.backward(algo.vf_coef * vf)
                self.critic.step()
                stats["value_loss"] = stats.get("value_loss", 0.0) + float(vf.detach())
                stats["value_clip"] = stats.get("value_clip", 0.0) + float(vst["value_clip"].float().sum())
            stats["policy_loss"] += float(pg.detach())
            stats["tokens"] += float(m.sum())
            stats["clip_low"] += float((st["clip_low"].float() * m).sum())
            stats["clip_high"] += float((st["clip_high"].float() * m).sum())
            stats["approx_kl"] += float((approx_kl(logps, old) * m).sum())
            if ent is not None and first_pass:
                stats["entropy"] = stats.get("entropy", 0.0) + float((ent.detach() * m).sum())
                stats["entropy_tokens"] = stats.get("entropy_tokens", 0.0) + float(m.sum())
            if ptx is not None:
                stats["ptx_loss"] = stats.get("ptx_loss", 0.0) + float(ptx.detach())
        self.actor.end_update()
        if self.critic is not None:
            self.critic.end_update()
        return stats
