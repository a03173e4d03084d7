"""Rollout: sample ``num_generations`` responses per prompt from the policy and score them with the reward
functions (one process's share), and the reward statistics of a batch over all processes."""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from rlhf_cli.data.prompts import PromptExample, reward_fields
from rlhf_cli.rl.experience import Sample
from rlhf_cli.rollout.generate import eos_ids, generate
from rlhf_cli.rollout.sampling import SamplingParams
from rlhf_cli.training.runtime import RunContext


class Rollout:
    """Generates and scores groups of ``num_generations`` responses per prompt for one process."""

    def __init__(self, ctx: RunContext, engine, tokenizer, reward, prompts: Sequence[PromptExample], sec,
                 adjust: Optional[Callable[[float, int, bool], float]] = None):
        """``sec`` is the stage's section with the sampling fields (num_generations, max_new_tokens,
        temperature, top_p, top_k, stop_strings, generation_batch_size); ``adjust(reward, length,
        finished)`` post-processes each response's total reward (e.g. GRPO's overlong penalty)."""
        self.ctx, self.engine, self.tok, self.reward, self.prompts = ctx, engine, tokenizer, reward, prompts
        self.sec, self.adjust = sec, adjust
        self.params = SamplingParams.from_section(sec)
        self.eos = eos_ids(tokenizer, engine.module)
        self.start_step()

    def start_step(self) -> None:
        """Zero the step's generation and scoring timers."""
        self.gen_time = self.score_time = 0.0
        self.gen_tokens = 0

    def step_metrics(self) -> Dict[str, float]:
        """The step's ``time/generation``, ``time/scoring`` (slowest process) and ``gen_tokens_per_s``."""
        strategy = self.ctx.strategy
        slowest = strategy.all_reduce_named({"time/generation": self.gen_time, "time/scoring": self.score_time}, "max")
        tokens = strategy.all_reduce([self.gen_tokens])[0]
        return {**slowest, "gen_tokens_per_s": tokens / max(slowest["time/generation"], 1e-9)}

    def sample_groups(self, idx: Sequence[int], step: int, rnd: int) -> List[List[Sample]]:
        """Sample and score ``num_generations`` responses for each prompt index in ``idx``; the sampling
        generator is seeded per (seed, step, process, round), so a resumed run samples the same."""
        cfg, strategy, G = self.ctx.cfg, self.ctx.strategy, self.sec.num_generations
        exs = [self.prompts[i] for i in idx]
        flat = [e.ids for e in exs for _ in range(G)]
        gen = torch.Generator(device=strategy.device)
        # per (seed, step, process, round)
        gen.manual_seed((cfg.seed * 1_000_003 + step) * 65_537 + strategy.rank * 131 + rnd)
        t0 = time.time()
        with strategy.gathered_params(self.engine.module):
            out = generate(self.engine.module, flat, self.params, eos_token_ids=self.eos, pad_id=self.tok.pad_token_id,
                           tokenizer=self.tok, batch_size=self.sec.generation_batch_size or None, generator=gen)
        t1 = time.time()
        texts = out.texts(self.tok)
        fields = {k: [v for v in vals for _ in range(G)] for k, vals in reward_fields(exs).items()}
        scored = self.reward([e.text for e in exs for _ in range(G)], texts, **fields)
        self.score_time += time.time() - t1
        self.gen_time += t1 - t0
        lens = out.response_lengths.tolist()
        self.gen_tokens += sum(lens)
        resp, fin, logps = out.response_ids.tolist(), out.finished.tolist(), out.logprobs.float().cpu().tolist()
        samples = []
        for i in range(len(flat)):
            total = scored.total[i] if self.adjust is None else self.adjust(scored.total[i], lens[i], fin[i])
            samples.append(Sample(flat[i], resp[i][:lens[i]], fin[i], total,
                                  {k: v[i] for k, v in scored.per_function.items()}, logps[i][:lens[i]]))
        return [samples[k * G:(k + 1) * G] for k in range(len(exs))]


def sample_metrics(ctx: RunContext, samples: Sequence[Sample]) -> Dict[str, float]:
    """Over all processes: reward mean/std (total and per function), prompt and response length, truncated
    fraction."""
    sums = {"reward": sum(x.reward for x in samples), "sq:reward": sum(x.reward ** 2 for x in samples),
            "prompt_tokens": sum(len(x.prompt_ids) for x in samples), "responses": len(samples),
            "response_tokens": sum(len(x.response_ids) for x in samples),
            "truncated": sum(not x.finished for x in samples)}
    for k in samples[0].per_function:
        sums[f"reward/{k}"] = sum(x.per_function[k] for x in samples)
        sums[f"sq:reward/{k}"] = sum(x.per_function[k] ** 2 for x in samples)  # "sq:": never a reward's name
    r = ctx.strategy.all_reduce_named(sums)
    n = r["responses"]

    def mean_std(key):
        mean = r[key] / n
        return mean, math.sqrt(max(0.0, r[f"sq:{key}"] / n - mean ** 2))

    out = {}
    out["reward"], out["reward_std"] = mean_std("reward")
    for k in sorted(samples[0].per_function):
        out[f"reward/{k}"], out[f"reward/{k}_std"] = mean_std(f"reward/{k}")
    out.update(prompt_length=r["prompt_tokens"] / n, response_length=r["response_tokens"] / n,
               truncated_fraction=r["truncated"] / n)
    return out
