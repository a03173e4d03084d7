"""Experience: scored responses -> the tensors the policy update trains on, written once for every RL stage.

``make_experience`` turns one step's samples and their sequence scores into an ``Experience``: the
rollout policy's log-probs (the sampler's, recomputed, or none for an exactly on-policy update), the
reference's, the critic's values, the KL penalty where the algorithm puts it in the reward, and the
advantages from the algorithm's registered estimator (whitened over every process when asked). The
forwards here (teacher-forced log-probs, values) are the ones the update uses too.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence

import torch

from rlhf_cli.algos.advantages import AdvantageInputs, estimate
from rlhf_cli.algos.logprobs import masked_moments, masked_sum, token_entropy, token_logprobs
from rlhf_cli.algos.policy import KL_ESTIMATORS
from rlhf_cli.algos.ppo import explained_variance_from_moments, shaped_rewards, whiten
from rlhf_cli.data.packing import micro_batches
from rlhf_cli.rollout.generate import left_pad


@dataclass
class Sample:
    """One generated response with its prompt (unpadded) and its scores."""
    prompt_ids: List[int]
    response_ids: List[int]
    finished: bool
    reward: float = 0.0
    per_function: Dict[str, float] = field(default_factory=dict)
    logprobs: Optional[List[float]] = None  # the sampler's log-prob of each response token (temperature-scaled)


@dataclass
class Experience:
    prompt_ids: torch.Tensor      # [N, P] left-padded
    prompt_mask: torch.Tensor     # [N, P]
    response_ids: torch.Tensor    # [N, L] right-padded
    response_mask: torch.Tensor   # [N, L] float; 0 at pads and at masked (overlong) responses
    advantages: torch.Tensor      # [N] per response (GRPO) or [N, L] per token (PPO)
    old_logps: Optional[torch.Tensor] = None  # [N, L] the rollout policy's (num_iterations > 1, PPO)
    rollout_logps: Optional[torch.Tensor] = None  # [N, L] the sampler's, saved while generating
    ref_logps: Optional[torch.Tensor] = None  # [N, L] the reference's (kl_coef > 0)
    response_lengths: Optional[torch.Tensor] = None  # [N] generated tokens (incl. loss-masked responses)
    old_values: Optional[torch.Tensor] = None  # [N, L] the critic's values at rollout (PPO)
    returns: Optional[torch.Tensor] = None     # [N, L] GAE returns (PPO)
    # Forwards lay a micro-batch's sequences end to end in one row (``flat_inputs``) instead of padding.
    padding_free: bool = False

    def __len__(self) -> int:
        return self.prompt_ids.size(0)

    def select(self, rows: Sequence[int]) -> "Experience":
        """Rows ``rows``, with all-padding columns trimmed (left of prompts, right of responses)."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        pm = self.prompt_mask[idx]
        p_keep = int(pm.sum(-1).max())
        lens = self.response_lengths[idx] if self.response_lengths is not None else \
            (self.response_mask[idx] > 0).sum(-1)
        l_keep = max(1, int(lens.max()))

        def cut_r(x):
            return None if x is None else x[idx][:, :l_keep]

        adv = self.advantages[idx]
        return replace(self, prompt_ids=self.prompt_ids[idx][:, -p_keep:], prompt_mask=pm[:, -p_keep:],
                       response_ids=cut_r(self.response_ids), response_mask=cut_r(self.response_mask),
                       advantages=adv[:, :l_keep] if adv.dim() == 2 else adv, old_logps=cut_r(self.old_logps),
                       ref_logps=cut_r(self.ref_logps), rollout_logps=cut_r(self.rollout_logps), response_lengths=lens,
                       old_values=cut_r(self.old_values), returns=cut_r(self.returns))


def build_experience(samples: Sequence[Sample], advantages: torch.Tensor, pad_id: int,
                     mask_truncated: bool, device, padding_free: bool = False) -> Experience:
    """Pad samples into tensors; ``mask_truncated`` zeroes the loss mask of unfinished responses;
    ``padding_free`` makes the model forwards over this experience run on one padding-free row."""
    prompt_ids, prompt_mask = left_pad([s.prompt_ids for s in samples], pad_id)
    L = max(1, max(len(s.response_ids) for s in samples))
    resp = torch.full((len(samples), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), L), dtype=torch.float32)
    has_logps = all(s.logprobs is not None for s in samples)
    rollout = torch.zeros((len(samples), L), dtype=torch.float32) if has_logps else None
    for i, s in enumerate(samples):
        n = len(s.response_ids)
        resp[i, :n] = torch.as_tensor(s.response_ids, dtype=torch.long)
        if not (mask_truncated and not s.finished):
            mask[i, :n] = 1.0
        if has_logps:
            rollout[i, :n] = torch.as_tensor(s.logprobs, dtype=torch.float32)
    lens = torch.as_tensor([len(s.response_ids) for s in samples], dtype=torch.long)
    return Experience(prompt_ids.to(device), prompt_mask.to(device), resp.to(device), mask.to(device),
                      advantages.float().to(device), response_lengths=lens, padding_free=padding_free,
                      rollout_logps=rollout.to(device) if has_logps else None)


def sequence_inputs(exp: Experience):
    """(ids, attention mask, positions) of [left-padded prompt | right-padded response] rows."""
    ids = torch.cat([exp.prompt_ids, exp.response_ids], dim=1)
    attn = torch.cat([exp.prompt_mask.long(), _real(exp)], dim=1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return ids, attn, pos


@dataclass
class FlatRow:
    """A micro-batch as ONE padding-free row: each sample's real prompt tokens then its generated tokens,
    positions restarting at 0 per sample (``sdpa_varlen`` attends per sample; other attention
    implementations derive the same block-diagonal mask from the positions). ``pred`` are the flat positions
    whose outputs predict response token ``cols`` of row ``rows`` (and where the critic's value of the state
    before that token is read)."""
    input_ids: torch.Tensor     # [1, S]
    position_ids: torch.Tensor  # [1, S]
    pred: torch.Tensor          # [K]
    rows: torch.Tensor          # [K]
    cols: torch.Tensor          # [K]
    shape: tuple                # (N, L) of the padded response layout

    def scatter(self, flat: torch.Tensor) -> torch.Tensor:
        """``[K]`` values at the response tokens -> ``[N, L]`` (0 at padding; keeps the autograd graph)."""
        out = flat.new_zeros(self.shape)
        return out.index_put((self.rows, self.cols), flat)


def flat_inputs(exp: Experience) -> FlatRow:
    """The padding-free row of ``exp`` (prompts are never empty, ``left_pad`` refuses them: position
    ``p - 1`` predicts the first response token)."""
    dev = exp.response_ids.device
    P = exp.prompt_ids.size(1)
    plens = exp.prompt_mask.long().sum(-1).tolist()
    rlens = _real(exp).sum(-1).tolist()
    ids, pos, pred, rows, cols, off = [], [], [], [], [], 0
    for i, (p, r) in enumerate(zip(plens, rlens)):
        ids += [exp.prompt_ids[i, P - p:], exp.response_ids[i, :r]]
        pos.append(torch.arange(p + r, device=dev))
        pred.append(torch.arange(off + p - 1, off + p - 1 + r, device=dev))
        rows.append(torch.full((r,), i, dtype=torch.long, device=dev))
        cols.append(torch.arange(r, device=dev))
        off += p + r
    return FlatRow(torch.cat(ids)[None], torch.cat(pos)[None], torch.cat(pred), torch.cat(rows), torch.cat(cols),
                   tuple(exp.response_ids.shape))


def response_logprobs(model, exp: Experience, temperature: float, chunk_size: int,
                      with_entropy: bool = False, entropy_grad: bool = False):
    """Teacher-forced ``log pi(response_t | prompt, response_<t)`` ``[N, L]`` (fp32, temperature-scaled
    like the sampler), plus per-token entropy when asked (differentiable with ``entropy_grad``, for an
    entropy bonus). Only the response positions reach the LM head."""
    if exp.padding_free:
        flat = flat_inputs(exp)
        logits = model(input_ids=flat.input_ids, position_ids=flat.position_ids, use_cache=False,
                       logits_to_keep=flat.pred).logits
        labels = exp.response_ids[flat.rows, flat.cols][None]
    else:
        ids, attn, pos = sequence_inputs(exp)
        L = exp.response_ids.size(1)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=L + 1).logits[:, :-1]
        labels = exp.response_ids
    if temperature != 1.0:
        logits = logits / temperature
    logps = token_logprobs(logits, labels, chunk_size)
    ent = token_entropy(logits, chunk_size, differentiable=entropy_grad) if with_entropy else None
    if exp.padding_free:
        logps = flat.scatter(logps[0])
        ent = None if ent is None else flat.scatter(ent[0])
    return logps, ent


def response_values(critic, exp: Experience) -> torch.Tensor:
    """The critic's value of the state before each response token, ``[N, L]`` (the position whose
    output predicts response token t, aligned with ``response_logprobs``)."""
    if exp.padding_free:
        flat = flat_inputs(exp)
        return flat.scatter(critic(flat.input_ids, None, position_ids=flat.position_ids)[0, flat.pred].float())
    ids, attn, pos = sequence_inputs(exp)
    P, L = exp.prompt_ids.size(1), exp.response_ids.size(1)
    return critic(ids, attn, position_ids=pos)[:, P - 1:P - 1 + L].float()


def loss_normalizer(strategy, exp: Experience, loss_agg: str) -> float:
    """The GLOBAL count (all processes) a loss aggregation divides by: loss tokens or sequences."""
    from rlhf_cli.algos.policy import LOSS_AGGREGATIONS

    tokens, seqs = strategy.all_reduce([float(exp.response_mask.sum()), float(len(exp))])
    return max(tokens if LOSS_AGGREGATIONS.meta(loss_agg).get("normalizer") == "tokens" else seqs, 1.0)


def _real(exp: Experience) -> torch.Tensor:
    """1 at generated tokens (whether or not they are masked out of the loss)."""
    L = exp.response_ids.size(1)
    if exp.response_lengths is None:
        return (exp.response_mask > 0).long()
    ar = torch.arange(L, device=exp.response_ids.device)
    return (ar[None, :] < exp.response_lengths.to(ar.device)[:, None]).long()


@torch.no_grad()
def batched_logprobs(model, exp: Experience, micro_batch_size: int, temperature: float,
                     chunk_size: int) -> torch.Tensor:
    """``response_logprobs`` over the whole experience in micro-batches, no grad -> ``[N, L]``."""
    return batched(lambda mb: response_logprobs(model, mb, temperature, chunk_size)[0], exp, micro_batch_size)


@torch.no_grad()
def batched(fn, exp: Experience, micro_batch_size: int) -> torch.Tensor:
    """``fn(micro-batch) -> [n, l]`` over the whole experience in micro-batches, no grad -> ``[N, L]``."""
    out = torch.zeros(exp.response_ids.shape, dtype=torch.float32, device=exp.response_ids.device)
    for rows in micro_batches(len(exp), micro_batch_size):
        x = fn(exp.select(rows))
        out[rows[0]:rows[-1] + 1, :x.size(1)] = x
    return out


@torch.no_grad()
def make_experience(ctx, algo, samples: Sequence[Sample], scores: torch.Tensor, pad_id: int, actor, ref=None,
                    critic=None, kl_coef: float = 0.0):
    """The experience of one step and its metrics (over every process).

    ``algo``: the ``rl.algorithm.Algorithm``; ``scores`` ``[N]``: the sequence scores trained on (a stage
    may have post-processed the rewards); ``ref``: the reference (read when ``kl_coef > 0``, and for the
    rollout KL with ``kl_in="reward"``); ``critic``: the value model; ``kl_coef``: the KL weight of this
    step (a controller's current value). Metrics with ``kl_in="reward"``: ``score``, ``reward_shaped``,
    ``kl`` (mean over responses of the summed per-token KL: the unit of a KL target), ``kl_coef`` and
    ``missing_eos_fraction``; with a critic also ``returns_mean``, ``values_mean`` and
    ``explained_variance``.
    """
    cfg, strategy, sec = ctx.cfg, ctx.strategy, algo.section
    exp = build_experience(samples, torch.zeros(len(samples)), pad_id, algo.mask_truncated, strategy.device,
                           cfg.data.padding_free)
    mbs, temp, chunk = cfg.train.micro_batch_size, sec.temperature, sec.logprob_chunk_size
    actor.eval()
    if algo.old_logprobs == "rollout":
        exp.old_logps = exp.rollout_logps
    elif algo.old_logprobs == "recompute":
        exp.old_logps = batched_logprobs(actor, exp, mbs, temp, chunk)
    if ref is not None and (algo.kl_in == "reward" or kl_coef > 0):
        exp.ref_logps = batched_logprobs(ref, exp, mbs, temp, chunk)
    if critic is not None:
        exp.old_values = batched(lambda mb: response_values(critic, mb), exp, mbs)
    actor.train()
    mask = exp.response_mask
    scores = scores.float().to(strategy.device)
    metrics, token_rewards = {}, None
    if algo.kl_in == "reward":
        kl = KL_ESTIMATORS.get(algo.kl_estimator)(exp.old_logps, exp.ref_logps) * mask
        token_rewards, non_score = shaped_rewards(scores, kl, mask, kl_coef)
        red = strategy.all_reduce_named({"n": len(exp), "kl": float(masked_sum(kl, mask)), "score": float(scores.sum()),
                                  "shaped": float((scores + non_score).sum()),
                                  "eos_missing": float(sum(not x.finished for x in samples))})
        n = red["n"]
        metrics.update(score=red["score"] / n, reward_shaped=red["shaped"] / n, kl=red["kl"] / n, kl_coef=kl_coef,
                       missing_eos_fraction=red["eos_missing"] / n)
    exp.advantages, exp.returns = advantages(strategy, algo, scores, mask, token_rewards, exp.old_values)
    if critic is not None:
        metrics.update(critic_metrics(strategy, exp))
    return exp, metrics


def advantages(strategy, algo, scores: torch.Tensor, mask: torch.Tensor, token_rewards=None, values=None):
    """``(advantages[N, L], returns or None)`` from the algorithm's registered estimator, whitened over every
    process when it asks; the scores' moments are summed over every process first, so a batch statistic
    does not depend on the number of processes."""
    inputs = AdvantageInputs(scores, mask, algo.section.num_generations, token_rewards=token_rewards, values=values,
                             batch_moments=strategy.all_reduce(masked_moments(scores)))
    adv, returns = estimate(algo.advantage, inputs, **algo.advantage_options)
    if algo.whiten_advantages:
        adv = whiten(adv, mask, strategy.all_reduce(masked_moments(adv, mask)))
    return adv, returns


def critic_metrics(strategy, exp: Experience) -> dict:
    """``returns_mean``, ``values_mean`` and ``explained_variance`` of the critic over every process."""
    m = exp.response_mask
    names = ("sum", "sum_sq", "count")
    moments = {**{f"returns/{k}": v for k, v in zip(names, masked_moments(exp.returns, m))},
               **{f"residual/{k}": v for k, v in zip(names, masked_moments(exp.returns - exp.old_values, m))},
               "values/sum": float(masked_sum(exp.old_values, m))}
    red = strategy.all_reduce_named(moments)
    tokens = max(red["returns/count"], 1.0)
    return {"returns_mean": red["returns/sum"] / tokens, "values_mean": red["values/sum"] / tokens,
            "explained_variance": explained_variance_from_moments(tuple(red[f"returns/{k}"] for k in names),
                                                                  tuple(red[f"residual/{k}"] for k in names))}
