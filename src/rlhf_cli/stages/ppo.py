"""PPO for RLHF, the third stage of InstructGPT (Ouyang et al. 2022; Ziegler et al. 2019; Huang et al. 2024,
"The N+ implementation details of RLHF with PPO"), as a configuration of the RL core.

Four models: the actor (policy) and the critic (a value head: the policy's, or the reward model's with
``critic.init=reward_model``) are trainable engines; the reference and the reward model(s) are frozen.
One step, on every process:

1. rollout: ``prompts_per_step`` prompts x ``num_generations`` responses from the actor (shared engine);
2. score: the reward registry (rule rewards, reward models, plugins), then the options against reward
   hacking (``trained_scores``): a length penalty, running normalisation, clipping, and the EOS trick last;
3. the core's experience: the reference's per-token log-probs and the critic's values (and, with
   ``ppo.old_logprobs=recompute``, the rollout policy's; else the sampler's own, saved while generating);
   the per-token reward ``-kl_coef * KL_t`` plus the score at the last response token (the KL controller
   sets ``kl_coef``); GAE advantages, whitened over all processes, and returns = advantages + values;
4. the core's update: ``epochs`` passes over the rollout in ``mini_batches`` optimizer steps: the policy
   loss (``ppo.policy_loss``, the clipped surrogate) + an entropy bonus + ``ptx_coef`` x the SFT loss on
   ``ptx_data`` (PPO-ptx, InstructGPT eq. 2) for the actor, the clipped value loss for the critic; optional
   early stop on the approx-KL to the rollout policy.

Losses are normalised by GLOBAL token (or sequence) counts of each mini-batch, so the gradient does not
depend on how a mini-batch is split over micro-batches and processes.
"""
from __future__ import annotations

import copy
import json
import time
from typing import Dict, List

import torch

from rlhf_cli.algos.advantages import ADVANTAGES
from rlhf_cli.algos.kl_control import build_kl_controller
from rlhf_cli.algos.policy import POLICY_LOSSES
from rlhf_cli.algos.reward_shaping import RunningMoments, post_process_scores
from rlhf_cli.models.loading import load_causal_lm
from rlhf_cli.models.reward_model import build_reward_model
from rlhf_cli.rl.algorithm import Algorithm, registered_options
from rlhf_cli.rl.experience import Sample, make_experience
from rlhf_cli.rl.prompts import PromptStream
from rlhf_cli.rl.ptx import PTXStream
from rlhf_cli.rl.rollout import Rollout, sample_metrics
from rlhf_cli.rl.setup import setup_rl
from rlhf_cli.rl.update import PolicyUpdate
from rlhf_cli.training.loop import run_steps
from rlhf_cli.training.reference import Reference
from rlhf_cli.training.runtime import RunContext, export_final, write_manifest


def algorithm(ppo, precision: str) -> Algorithm:
    """PPO in the RL core's terms (``rl/algorithm.py``)."""
    rollout_logprobs = ppo.old_logprobs == "rollout" or (ppo.old_logprobs == "auto" and precision == "fp32")
    return Algorithm(
        section=ppo, advantage="gae", advantage_options=registered_options(ADVANTAGES, "gae", ppo),
        policy_loss=ppo.policy_loss, policy_loss_options=registered_options(POLICY_LOSSES, ppo.policy_loss, ppo),
        kl_in="reward", kl_coef=ppo.kl_coef, kl_estimator=ppo.kl_estimator,
        old_logprobs="rollout" if rollout_logprobs else "recompute", epochs=ppo.epochs,
        mini_batches=ppo.mini_batches, shuffle=True, whiten_advantages=ppo.whiten_advantages,
        target_approx_kl=ppo.target_approx_kl, entropy_coef=ppo.entropy_coef, value_clip=ppo.value_clip or None,
        vf_coef=ppo.vf_coef, ptx_coef=ppo.ptx_coef)


def trained_scores(ctx: RunContext, samples: List[Sample], moments: RunningMoments) -> torch.Tensor:
    """The sequence scores the policy is trained on: the reward functions' total through
    ``reward_shaping.post_process_scores`` (length penalty, running normalisation over all processes,
    clipping, then the EOS trick last)."""
    ppo = ctx.cfg.ppo
    return post_process_scores(
        torch.tensor([x.reward for x in samples], dtype=torch.float32),
        torch.tensor([x.finished for x in samples], dtype=torch.bool),
        torch.tensor([len(x.response_ids) for x in samples], dtype=torch.float32),
        missing_eos_penalty=ppo.missing_eos_penalty, length_coef=ppo.length_penalty, max_len=ppo.max_new_tokens,
        moments=moments if ppo.reward_norm == "running" else None, reduce=ctx.strategy.all_reduce,
        clip=ppo.reward_clip)


def write_samples(ctx: RunContext, step: int, samples: List[Sample], scores: torch.Tensor, tokenizer) -> None:
    """A few prompt -> response -> reward lines in samples.jsonl (rank 0's own samples)."""
    ppo = ctx.cfg.ppo
    if not ctx.strategy.is_main or not ppo.sample_every or step % ppo.sample_every:
        return
    with open(ctx.out / "samples.jsonl", "a") as f:
        for x, sc in list(zip(samples, scores.tolist()))[:ppo.samples_per_write]:
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
        mcfg.path, mcfg.revision = source, None  # another model than model.*: its revision is '@rev' in the path
    return build_reward_model(mcfg, tokenizer, cfg.seed, key="critic.path" if source is not None else "model.path")


class PPOState:
    """What a PPO run resumes besides the engines: the prompt and ptx cursors, the KL controller and the
    running reward moments."""

    def __init__(self, ctx: RunContext, stream: PromptStream, ptx):
        ppo = ctx.cfg.ppo
        if ppo.kl_controller == "adaptive":
            from rlhf_cli.config.stage_ppo import check_kl_horizon

            check_kl_horizon(ctx.cfg, ctx.strategy.world_size)
        self.stream, self.ptx = stream, ptx
        self.kl_ctl = build_kl_controller(ppo.kl_controller, ppo.kl_coef, ppo.target_kl, ppo.kl_horizon)
        self.moments = RunningMoments()

    def state_dict(self) -> Dict:
        return {"prompt_cursor": self.stream.cursor, "kl_controller": self.kl_ctl.state_dict(),
                "reward_moments": self.moments.state_dict(),
                "ptx_cursor": self.ptx.stream.cursor if self.ptx else 0}

    def load_state_dict(self, state: Dict) -> None:
        self.stream.cursor = state["prompt_cursor"]
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.moments.load_state_dict(state["reward_moments"])
        if self.ptx:
            self.ptx.stream.cursor = state.get("ptx_cursor", 0)


def run(ctx: RunContext) -> dict:
    cfg, strategy, ppo, data = ctx.cfg, ctx.strategy, ctx.cfg.ppo, ctx.cfg.data
    algo = algorithm(ppo, strategy.precision)
    tokenizer, reward, prompts, total = setup_rl(ctx, ppo, extra=f"; critic from {cfg.critic.init}")
    reference = Reference(ctx, tokenizer)
    optimizer_steps = total * ppo.epochs * ppo.mini_batches
    actor = strategy.prepare(load_causal_lm(cfg.model, tokenizer), optimizer_steps, name="actor")
    ref = reference.bind(actor)
    critic = strategy.prepare(build_critic(cfg, tokenizer), optimizer_steps, name="critic", optim=cfg.critic.optim)
    stream = PromptStream(len(prompts), cfg.seed, data.shuffle)
    ptx = PTXStream(ctx, tokenizer, ppo.ptx_data) if ppo.ptx_coef > 0 else None
    rollout = Rollout(ctx, actor, tokenizer, reward, prompts, ppo)
    run_state = PPOState(ctx, stream, ptx)
    update = PolicyUpdate(ctx, algo, actor, critic, ptx)
    state = ctx.resume()
    start = state["step"] if state else 0
    if state:
        run_state.load_state_dict(state)

    def one_step(step: int) -> Dict[str, float]:
        t0 = time.time()
        rollout.start_step()
        samples = [x for gr in rollout.sample_groups(stream.draw(ppo.prompts_per_step, strategy.rank,
                                                                 strategy.world_size), step, 0) for x in gr]
        t_scores = time.time()
        metrics = sample_metrics(ctx, samples)
        scores = trained_scores(ctx, samples, run_state.moments)
        exp, exp_metrics = make_experience(ctx, algo, samples, scores, tokenizer.pad_token_id, actor, ref=ref,
                                           critic=critic, kl_coef=run_state.kl_ctl.kl_coef)
        metrics.update(exp_metrics)
        # the next step's kl_coef, from the KL this rollout reached (its unit: summed over a response)
        run_state.kl_ctl.update(exp_metrics["kl"], n_steps=len(samples) * strategy.world_size)
        forwards = time.time() - t_scores
        t1 = time.time()
        metrics.update(update(exp, step))
        timing = rollout.step_metrics()
        timing["time/scoring"] += forwards  # reward + reference + critic forwards
        metrics.update({"lr": actor.lr(), "grad_norm": actor.grad_norm(), "critic_lr": critic.lr(),
                        "critic_grad_norm": critic.grad_norm(), **actor.fp16_metrics(),
                        **critic.fp16_metrics("critic_"), **timing, "time/update": time.time() - t1,
                        "step_time": time.time() - t0})
        write_samples(ctx, step + 1, samples, scores, tokenizer)
        return metrics

    actor.train()
    critic.train()
    summary = run_steps(ctx, start, total, one_step, state=run_state.state_dict,
                        info=lambda m: f"reward {m['reward']:.3f}  kl {m['kl']:.3f}  {m['step_time']:.1f}s/step")
    final = export_final(ctx, actor, tokenizer)
    export_final(ctx, critic, tokenizer, subdir="critic")
    write_manifest(ctx, summary, {"data.path": data.path, "ppo.ptx_data": ppo.ptx_data})
    ctx.log(f"Done: {final} (critic: {ctx.out / 'critic'})")
    return summary
