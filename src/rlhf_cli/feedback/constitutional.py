"""The two RLAIF phases on one chunk of one process's share of the prompts.

Every random draw is seeded by (seed, phase, rank, chunk[, round]), so a chunk computes the same records
whether the run is fresh or resumed (``stages/rlaif.py`` saves each chunk and skips saved ones).

CAI-SL (Bai et al. 2022, sec. 3.1): sample a response, then for ``rlaif.revisions`` rounds draw a
principle, ask the judge for a critique under its critique request, then for a revision under its
revision request; the final revision becomes the SFT target.

RL-AIF (Bai et al. 2022, sec. 4.1; Lee et al. 2023, sec. 2.1): K responses per prompt (or the record's
own pair), every pair judged under a drawn principle's comparison question in BOTH orders; the soft label
is the order-averaged renormalised probability of the choice labels, read from one forward over
prompt + question (optionally after the judge's chain of thought, then clamped to a band).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import torch

from rlhf_cli.algos.ai_feedback import clamp_band, confident, order_averaged, order_flips
from rlhf_cli.data.constitution import Constitution, hash_ints
from rlhf_cli.data.rlaif import RLAIFPrompt, pref_prompt, sl_record
from rlhf_cli.models.judge import Judge
from rlhf_cli.rollout.sampling import SamplingParams


@dataclass
class Timers:
    generate: float = 0.0        # policy sampling
    judge_generate: float = 0.0  # critiques, revisions, chain-of-thought reasoning
    judge_forward: float = 0.0   # label-reading forwards
    preferences: float = 0.0     # wall time of the whole preference phase (pairs per minute)

    def add(self, key: str, t0: float) -> None:
        setattr(self, key, getattr(self, key) + time.time() - t0)


@dataclass
class PhaseOut:
    records: Dict[str, List[dict]] = field(default_factory=dict)  # file name -> records (with "_order")
    counts: Dict[str, float] = field(default_factory=dict)       # summed across processes later


def generator(device, seed: int, *keys: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(hash_ints(seed, *keys) % (2 ** 63))
    return g


def judge_params(j) -> SamplingParams:
    return SamplingParams(max_new_tokens=j.max_new_tokens, temperature=j.temperature)


SL_FILES = ("sl_data.jsonl", "sl_chains.jsonl")
PREFERENCE_FILES = ("preferences.jsonl",)


def cai_sl(cfg, rank: int, chunk: int, policy: Judge, judge: Judge, const: Constitution,
           prompts: Sequence[RLAIFPrompt], timers: Timers) -> PhaseOut:
    """Critique -> revision chains; sl_data.jsonl + sl_chains.jsonl records."""
    r, j, dev = cfg.rlaif, cfg.judge, policy.device
    if not prompts:
        return PhaseOut({name: [] for name in SL_FILES}, {})
    t0 = time.time()
    current = policy.generate([p.ids for p in prompts], SamplingParams.from_section(r),
                              generator(dev, cfg.seed, 1, rank, chunk))
    timers.add("generate", t0)
    chains = [{"prompt": pref_prompt(p), "initial_response": c, "rounds": []} for p, c in zip(prompts, current)]
    kept_previous = 0
    for rnd in range(r.revisions):
        drawn = [const.draw(cfg.seed, 1, p.index, rnd) for p in prompts]
        t0 = time.time()
        crit_in = [judge.encode(const.render("critique", prompt=p.text, response=c,
                                             critique_request=pr.critique_request))
                   for p, c, pr in zip(prompts, current, drawn)]
        critiques = judge.generate(crit_in, judge_params(j), generator(dev, cfg.seed, 2, rank, chunk, rnd))
        rev_in = [judge.encode(const.render("revision", prompt=p.text, response=c, critique=cr,
                                            revision_request=pr.revision_request))
                  for p, c, cr, pr in zip(prompts, current, critiques, drawn)]
        revisions = judge.generate(rev_in, judge_params(j), generator(dev, cfg.seed, 3, rank, chunk, rnd))
        timers.add("judge_generate", t0)
        for i, (pr, cr, rev) in enumerate(zip(drawn, critiques, revisions)):
            chains[i]["rounds"].append({"principle": pr.name, "critique_request": pr.critique_request,
                                        "critique": cr, "revision_request": pr.revision_request, "revision": rev})
            if rev:
                current[i] = rev
            else:
                kept_previous += 1  # an empty revision keeps the response it was asked to revise
    sl, ch = [], []
    for p, chain, final in zip(prompts, chains, current):
        chain["final_response"] = final
        sl.append({**sl_record(p, final), "_order": [p.index]})
        ch.append({**chain, "_order": [p.index]})
    return PhaseOut({"sl_data.jsonl": sl, "sl_chains.jsonl": ch},
                    {"sl_examples": len(sl), "sl_empty_revisions": kept_previous,
                     "sl_changed": sum(c["final_response"] != c["initial_response"] for c in chains)})


def candidates(cfg, rank: int, chunk: int, policy: Judge, prompts: Sequence[RLAIFPrompt],
               timers: Timers) -> List[List[str]]:
    """The responses compared per prompt: the record's (chosen, rejected) pair, or K policy samples."""
    r = cfg.rlaif
    if r.responses == "data":
        return [list(p.pair) for p in prompts]
    K = r.num_responses
    t0 = time.time()
    flat = policy.generate([p.ids for p in prompts for _ in range(K)], SamplingParams.from_section(r),
                           generator(policy.device, cfg.seed, 4, rank, chunk))
    timers.add("generate", t0)
    return [flat[k * K:(k + 1) * K] for k in range(len(prompts))]


def judge_orders(cfg, judge: Judge, const: Constitution, items: List[tuple], rank: int, chunk: int,
                 timers: Timers) -> torch.Tensor:
    """Label probs [2N, 2] for items (prompt, principle, response 1, response 2): rows [0, N) show response
    1 as label A, rows [N, 2N) swap the order. With CoT the judge first writes its reasoning."""
    j, r = cfg.judge, cfg.rlaif
    la, lb = j.labels
    tmpl = "compare_cot" if r.cot else "compare"
    texts = []
    for first in (True, False):
        for p, pr, x, y in items:
            a, b = (x, y) if first else (y, x)
            texts.append(const.render(tmpl, prompt=p.text, question=pr.comparison_question, response_a=a,
                                      response_b=b, label_a=la, label_b=lb))
    labels_fmt = {"label_a": la, "label_b": lb}
    if r.cot:
        t0 = time.time()
        heads = [judge.encode(t) for t in texts]
        reasons = judge.generate(heads, judge_params(j), generator(judge.device, cfg.seed, 5, rank, chunk))
        timers.add("judge_generate", t0)
        tail = judge.answer_prefix(const.render("compare_cot_answer", **labels_fmt), [la, lb])
        ids = [h + judge.text_ids(rs + tail) for h, rs in zip(heads, reasons)]
    else:
        ids = [judge.encode(t, const.render("compare_answer", **labels_fmt), [la, lb]) for t in texts]
    t0 = time.time()
    probs, mass = judge.label_probs(ids, [la, lb])
    timers.add("judge_forward", t0)
    return probs, mass


def rl_aif(cfg, rank: int, chunk: int, policy: Judge, judge: Judge, const: Constitution,
           prompts: Sequence[RLAIFPrompt], timers: Timers) -> PhaseOut:
    """AI-labelled soft preferences; preferences.jsonl records and the counts behind the report."""
    t_phase = time.time()
    try:
        return _rl_aif(cfg, rank, chunk, policy, judge, const, prompts, timers)
    finally:
        timers.add("preferences", t_phase)


def _rl_aif(cfg, rank: int, chunk: int, policy: Judge, judge: Judge, const: Constitution,
            prompts: Sequence[RLAIFPrompt], timers: Timers) -> PhaseOut:
    r = cfg.rlaif
    if not prompts:
        return PhaseOut({name: [] for name in PREFERENCE_FILES}, {})
    cands = candidates(cfg, rank, chunk, policy, prompts, timers)
    items, where, identical = [], [], 0
    for p, resp in zip(prompts, cands):
        for k, (i, jj) in enumerate(itertools.combinations(range(len(resp)), 2)):
            if resp[i].strip() == resp[jj].strip() or not resp[i].strip() or not resp[jj].strip():
                identical += 1  # nothing to prefer (or nothing to train on)
                continue
            items.append((p, const.draw(cfg.seed, 2, p.index, k), resp[i], resp[jj]))
            where.append((p.index, k))
    counts = {"pairs_judged": len(items), "pairs_identical_or_empty": identical}
    if not items:
        return PhaseOut({"preferences.jsonl": []}, {**counts, "pairs_kept": 0})
    probs, mass = judge_orders(cfg, judge, const, items, rank, chunk, timers)
    n = len(items)
    p1, p2 = probs[:n], probs[n:]
    if r.cot:
        lo, hi = r.cot_clamp
        p1 = torch.stack([clamp_band(p1[:, 0], lo, hi), 1 - clamp_band(p1[:, 0], lo, hi)], -1)
        p2 = torch.stack([clamp_band(p2[:, 0], lo, hi), 1 - clamp_band(p2[:, 0], lo, hi)], -1)
    p = order_averaged(p1, p2)  # P(response 1 is better)
    flips = order_flips(p1, p2)
    keep = confident(p, r.min_confidence)
    recs = []
    for t, ((pr, principle, x, y), (idx, k)) in enumerate(zip(items, where)):
        if not keep[t]:
            continue
        first_wins = bool(p[t] >= 0.5)
        rec = {"prompt": pref_prompt(pr), "chosen": x if first_wins else y, "rejected": y if first_wins else x,
               "judge_prob": round(float(max(p[t], 1 - p[t])), 6), "principle": principle.name,
               "order_flip": bool(flips[t]),
               "orders": [round(float(q if first_wins else 1 - q), 6) for q in (p1[t, 0], p2[t, 1])],
               "_order": [idx, k]}
        if r.responses == "data":
            rec["agrees_with_data"] = first_wins
        recs.append(rec)
    counts.update(pairs_kept=len(recs), order_flips=float(flips.sum()), label_mass_sum=float(mass.sum()),
                  label_rows=float(mass.numel()))
    if r.responses == "data":  # response 1 is the human-chosen answer
        counts.update(agree_averaged=float((p > 0.5).sum() + 0.5 * (p == 0.5).sum()),
                      agree_order1=float((p1[:, 0] > 0.5).sum()), agree_order2=float((p2[:, 1] > 0.5).sum()))
    return PhaseOut({"preferences.jsonl": recs}, counts)
