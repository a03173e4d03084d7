"""What the RL stages (GRPO, PPO) share: the resumable prompt stream and the rollout-and-score step."""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from rlhf_cli.data.packing import epoch_order
from rlhf_cli.data.prompts import PromptExample, reward_fields
from rlhf_cli.rl.experience import Sample
from rlhf_cli.rollout.generate import eos_ids, generate
from rlhf_cli.rollout.sampling import SamplingParams
from rlhf_cli.training.runtime import RunContext


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


class Roller:
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
        self.gen_time = self.score_time = 0.0
        self.gen_tokens = 0

    def groups(self, idx: Sequence[int], step: int, rnd: int) -> List[List[Sample]]:
        cfg, s, G = self.ctx.cfg, self.ctx.strategy, self.sec.num_generations
        exs = [self.prompts[i] for i in idx]
        flat = [e.ids for e in exs for _ in range(G)]
        gen = torch.Generator(device=s.device)
        gen.manual_seed((cfg.seed * 1_000_003 + step) * 65_537 + s.rank * 131 + rnd)  # per (seed, step, rank, round)
        t0 = time.time()
        with s.gathered_params(self.engine.module):
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
    keys = sorted(samples[0].per_function)
    vals = [sum(x.reward for x in samples), sum(x.reward ** 2 for x in samples)]
    for k in keys:
        vals += [sum(x.per_function[k] for x in samples), sum(x.per_function[k] ** 2 for x in samples)]
    vals += [sum(len(x.prompt_ids) for x in samples), len(samples), sum(len(x.response_ids) for x in samples),
             sum(not x.finished for x in samples)]
    r = ctx.strategy.all_reduce(vals)
    n = r[-3]

    def mean_std(s1, s2):
        mean = s1 / n
        return mean, math.sqrt(max(0.0, s2 / n - mean ** 2))

    out = {}
    out["reward"], out["reward_std"] = mean_std(r[0], r[1])
    for j, k in enumerate(keys):
        out[f"reward/{k}"], out[f"reward/{k}_std"] = mean_std(r[2 + 2 * j], r[3 + 2 * j])
    out.update(prompt_length=r[-4] / n, response_length=r[-2] / n, truncated_fraction=r[-1] / n)
    return out


def setup_rl(ctx: RunContext, sec, extra: str = ""):
    """Tokenizer, reward functions, prompts and the number of steps of an RL stage (``sec``: its section),
    with the one-line data summary logged. Returns (tokenizer, reward, prompts, total_steps)."""
    from omegaconf import OmegaConf

    from rlhf_cli.data.prompts import load_prompt_data
    from rlhf_cli.models.loading import load_tokenizer
    from rlhf_cli.rewards import build_reward

    cfg, s, d = ctx.cfg, ctx.strategy, ctx.cfg.data
    tokenizer = load_tokenizer(cfg.model)
    reward = build_reward(OmegaConf.to_container(cfg.reward.functions, resolve=True))
    prompts, st = load_prompt_data(d.path, d, tokenizer, max_prompt_tokens=d.max_length - sec.max_new_tokens,
                                   limit=d.limit)
    per_step = sec.prompts_per_step * s.world_size
    total = (cfg.train.max_steps if cfg.train.max_steps > 0
             else max(1, math.ceil(cfg.train.epochs * len(prompts) / per_step)))
    ctx.log(f"{cfg.stage.upper()} data: {st.records} records ({st.skipped} bad, {st.too_long} over the prompt "
            f"budget) -> {len(prompts)} prompts; {per_step} prompts x {sec.num_generations} responses per step, "
            f"{total} steps; rewards {reward}{extra}; precision {s.precision}, {s.world_size} process(es), "
            f"ZeRO-{cfg.engine.zero_stage}")
    return tokenizer, reward, prompts, total
