"""RLAIF and Constitutional AI: a judge LLM guided by a written constitution makes the feedback.

Bai et al. 2022 ("Constitutional AI: Harmlessness from AI Feedback"): CAI-SL critique -> revision data and
RL-AIF preference labels from a feedback model answering a principle's comparison question; Lee et al.
2023 ("RLAIF vs. RLHF"): soft labels from the label tokens' probabilities, averaged over both orders.

Every process takes its share of the prompts (``prompts[rank::world]``), runs the phases with the policy
and the judge on its device (inference only: no optimizer, no DeepSpeed engine), and writes its records to
``output_dir/.shards/``; after a barrier rank 0 merges them in prompt order into ``sl_data.jsonl``,
``sl_chains.jsonl`` and ``preferences.jsonl`` (the output dir is on a filesystem every node sees, as the
launcher already requires). Counts and timings are summed with ``all_reduce``. ``rlaif.then`` then trains
the next stage on the made file in the same command.
"""
from __future__ import annotations

import gc
import json
import shutil
import time
from pathlib import Path
from typing import Dict, List

from rlhf_cli.data.constitution import load_constitution
from rlhf_cli.data.rlaif import load_rlaif_prompts
from rlhf_cli.models.loading import load_causal_lm, load_tokenizer
from rlhf_cli.output_files import write_output
from rlhf_cli.rollout.judge import Judge, judge_dir_name, load_judge_model
from rlhf_cli.stages.rlaif_phases import PhaseOut, Timers, cai_sl, rl_aif
from rlhf_cli.stages.runtime import Interrupted, RunContext, write_manifest

FILES = ("sl_data.jsonl", "sl_chains.jsonl", "preferences.jsonl")
COUNT_KEYS = ("sl_examples", "sl_empty_revisions", "sl_changed", "pairs_judged", "pairs_identical_or_empty",
              "pairs_kept", "order_flips", "label_mass_sum", "label_rows", "agree_averaged", "agree_order1",
              "agree_order2")


def write_shards(ctx: RunContext, outs: List[PhaseOut]) -> Dict[str, int]:
    """Each process writes its records; rank 0 merges them in (prompt, pair) order. Returns line counts."""
    s = ctx.strategy
    shard_dir = ctx.out / ".shards"
    if s.is_main:
        shutil.rmtree(shard_dir, ignore_errors=True)
        shard_dir.mkdir(parents=True)
    s.barrier()
    names = [n for o in outs for n in o.records]
    for o in outs:
        for name, recs in o.records.items():
            with open(shard_dir / f"{name}.rank{s.rank}", "w") as f:
                for rec in recs:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    s.barrier()
    lines: Dict[str, int] = {}
    if s.is_main:
        for name in names:
            recs = []
            for r in range(s.world_size):
                part = shard_dir / f"{name}.rank{r}"
                recs += [json.loads(x) for x in part.read_text().splitlines() if x.strip()]
            recs.sort(key=lambda x: x["_order"])
            for rec in recs:
                rec.pop("_order")
            write_output(ctx.out / name, "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in recs))
            lines[name] = len(recs)
        shutil.rmtree(shard_dir, ignore_errors=True)
    s.barrier()
    return lines


def load_models(ctx: RunContext, tokenizer):
    """(policy Judge, judge Judge): the judge is the policy's own weights unless judge.path is set."""
    cfg, s = ctx.cfg, ctx.strategy
    model = load_causal_lm(cfg.model, tokenizer).to(device=s.device, dtype=s.dtype)
    model.requires_grad_(False)
    model.eval()
    bs = cfg.rlaif.generation_batch_size or 10 ** 9
    policy = Judge(model, tokenizer, batch_size=bs, name="policy")
    j = cfg.judge
    if j.path:
        jm, jt = load_judge_model(j.path, key="judge.path", attn_implementation=cfg.model.attn_implementation)
        jm = jm.to(device=s.device, dtype=s.dtype)
    else:
        jm, jt = model, tokenizer
    judge = Judge(jm, jt, batch_size=j.batch_size, chat=j.chat_template)
    return policy, judge


def summarise(ctx: RunContext, outs: List[PhaseOut], timers: Timers, lines: Dict[str, int], const,
              prompts_total: int, wall: float) -> dict:
    cfg, s = ctx.cfg, ctx.strategy
    local = {k: 0.0 for k in COUNT_KEYS}
    for o in outs:
        for k, v in o.counts.items():
            local[k] += v
    red = dict(zip(COUNT_KEYS, s.all_reduce([local[k] for k in COUNT_KEYS])))
    gen_t, jgen_t, jfwd_t, pref_t = s.all_reduce([timers.generate, timers.judge_generate, timers.judge_forward,
                                                  timers.preferences], "max")
    out = {"prompts": prompts_total, "time/generate": round(gen_t, 3), "time/judge_generate": round(jgen_t, 3),
           "time/judge_forward": round(jfwd_t, 3), "time/total": round(wall, 3)}
    phases = cfg.rlaif.phases
    if phases in ("sl", "both"):
        out.update(sl_examples=int(red["sl_examples"]), sl_changed=int(red["sl_changed"]),
                   sl_empty_revisions=int(red["sl_empty_revisions"]), revisions=cfg.rlaif.revisions)
    if phases in ("preferences", "both"):
        judged = red["pairs_judged"]
        out.update(pairs_judged=int(judged), pairs_kept=int(red["pairs_kept"]),
                   pairs_dropped_low_confidence=int(judged - red["pairs_kept"]),
                   pairs_identical_or_empty=int(red["pairs_identical_or_empty"]),
                   position_bias_rate=red["order_flips"] / judged if judged else 0.0,
                   label_mass=red["label_mass_sum"] / red["label_rows"] if red["label_rows"] else 0.0)
        if judged and pref_t > 0:  # the whole preference phase: sampling (if any), reasoning, label forwards
            out.update(seconds_per_pair=pref_t / judged, pairs_per_minute=60.0 * judged / pref_t,
                       judge_forward_seconds_per_pair=jfwd_t / judged)
        if cfg.rlaif.responses == "data" and judged:
            out.update(agreement_with_data=red["agree_averaged"] / judged,
                       agreement_order1=red["agree_order1"] / judged, agreement_order2=red["agree_order2"] / judged)
    out["files"] = lines
    out["constitution"] = {"path": str(const.path), "sha256": const.sha256, "principles": len(const.principles)}
    out["judge"] = {"path": judge_dir_name(cfg.judge.path), "labels": list(cfg.judge.labels), "cot": cfg.rlaif.cot}
    return out


def run(ctx: RunContext) -> dict:
    cfg, s, r, d = ctx.cfg, ctx.strategy, ctx.cfg.rlaif, ctx.cfg.data
    t_start = time.time()
    const = load_constitution(r.constitution)
    tokenizer = load_tokenizer(cfg.model)
    prompts, st = load_rlaif_prompts(d.path, d, tokenizer, max_prompt_tokens=d.max_length - r.max_new_tokens,
                                     limit=d.limit, need_pair=r.responses == "data" and r.phases != "sl")
    mine = prompts[s.rank::s.world_size]
    no_pair = f", {st.no_pair} without a single-turn pair" if st.no_pair else ""
    ctx.log(f"RLAIF data: {st.records} records ({st.skipped} skipped, {st.too_long} over the prompt budget"
            f"{no_pair}) -> "
            f"{len(prompts)} prompts, {len(mine)} on this process; phases={r.phases}; constitution "
            f"{const.path.name} ({len(const.principles)} principles, sha256 {const.sha256[:12]}); judge "
            f"{judge_dir_name(cfg.judge.path)}; {s.world_size} process(es), precision {s.precision}")
    policy, judge = load_models(ctx, tokenizer)
    timers, outs = Timers(), []

    def stop() -> bool:
        return ctx.should_stop()

    if r.phases in ("sl", "both"):
        outs.append(cai_sl(cfg, s.rank, policy, judge, const, mine, timers, stop))
        ctx.log(f"CAI-SL: {r.revisions} critique/revision round(s) on {len(mine)} prompts (this process)")
    if stop():
        raise Interrupted("stopped before the preferences phase; nothing written, rerun to start again")
    if r.phases in ("preferences", "both"):
        outs.append(rl_aif(cfg, s.rank, policy, judge, const, mine, timers))
    lines = write_shards(ctx, outs)
    summary = summarise(ctx, outs, timers, lines, const, len(prompts), time.time() - t_start)
    ctx.metrics.write(1, {k: v for k, v in summary.items() if isinstance(v, (int, float))})
    report = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
                       if isinstance(v, (int, float)))
    ctx.log(f"RLAIF: {report}; files {lines}")
    del policy, judge
    gc.collect()
    if r.then != "none":
        summary["then"] = {"stage": r.then, "output_dir": str(Path(cfg.output_dir) / r.then)}
    write_manifest(ctx, summary, {"data.path": d.path})
    if r.then != "none":
        from rlhf_cli.stages.then import run_then

        made = ctx.out / ("sl_data.jsonl" if r.then == "sft" else "preferences.jsonl")
        if r.then != "sft" and summary.get("pairs_kept", 0) < 2:
            from rlhf_cli.errors import DataError

            raise DataError(f"rlaif.then={r.then}: {made} has {summary.get('pairs_kept', 0)} pairs (need >= 2); "
                            "lower rlaif.min_confidence or use more prompts")
        run_then(ctx, r.then, made, list(r.then_overrides), r.then_conf)
    ctx.log(f"Done: {ctx.out}")
    return summary
