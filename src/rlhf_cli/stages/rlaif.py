"""RLAIF and Constitutional AI: a judge LLM guided by a written constitution makes the feedback.

Bai et al. 2022 ("Constitutional AI: Harmlessness from AI Feedback"): CAI-SL critique -> revision data and
RL-AIF preference labels from a feedback model answering a principle's comparison question; Lee et al.
2023 ("RLAIF vs. RLHF"): soft labels from the label tokens' probabilities, averaged over both orders.

Every process takes its share of the prompts (``prompts[rank::world]``), runs the phases with the policy
and the judge on its device (inference only: no optimizer, no DeepSpeed engine), ``rlaif.chunk_prompts``
prompts at a time, and saves each finished chunk under ``output_dir/rlaif_chunks/`` (``rlaif_chunks.py``):
a SIGINT/SIGTERM stops after the current chunk, and a rerun of the same command reads the saved chunks back
and continues. After a barrier rank 0 merges every chunk in prompt order into ``sl_data.jsonl``,
``sl_chains.jsonl`` and ``preferences.jsonl`` (the output dir is on a filesystem every node sees, as the
launcher already requires) and marks the phases done. Counts are summed with ``all_reduce``.
``rlaif.then`` then trains the next stage on the made file in the same command (resumable like any
stage, in output_dir/<stage>); the manifest, which marks the run finished, is written after it.
"""
from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path
from typing import Dict, List

from rlhf_cli.data.constitution import load_constitution
from rlhf_cli.data.rlaif import RLAIFPrompt, load_rlaif_prompts
from rlhf_cli.feedback.constitutional import PREFERENCE_FILES, SL_FILES, PhaseOut, Timers, cai_sl, rl_aif
from rlhf_cli.models.judge import Judge, judge_dir_name, load_judge_model
from rlhf_cli.models.loading import load_causal_lm, load_tokenizer
from rlhf_cli.output_files import write_output
from rlhf_cli.training.chunks import (
    CHUNK_DIR,
    DONE,
    chunk_path,
    drop_chunks,
    load_chunk,
    merge_chunks,
    read_done,
    save_chunk,
    write_done,
)
from rlhf_cli.training.runtime import Interrupted, RunContext, write_manifest

COUNT_KEYS = ("sl_examples", "sl_empty_revisions", "sl_changed", "pairs_judged", "pairs_identical_or_empty",
              "pairs_kept", "order_flips", "label_mass_sum", "label_rows", "agree_averaged", "agree_order1",
              "agree_order2")
PHASE_FILES = {"sl": SL_FILES, "preferences": PREFERENCE_FILES}


def run_phase(ctx: RunContext, name: str, fn, mine: List[RLAIFPrompt], n_chunks: int, policy, judge, const,
              timers: Timers) -> PhaseOut:
    """One phase over this process's prompts, chunk by chunk: a saved chunk is read back, any other is
    computed and saved; after each the run may stop (SIGINT/SIGTERM) and a rerun continues from there.
    Every process runs the same number of chunks (an empty one where its share is shorter), so the stop
    checks, a collective, line up."""
    cfg, strategy, size = ctx.cfg, ctx.strategy, ctx.cfg.rlaif.chunk_prompts
    total = PhaseOut({f: [] for f in PHASE_FILES[name]}, {})
    reused = 0
    for k in range(n_chunks):
        path = chunk_path(ctx.out, name, strategy.rank, k)
        saved = load_chunk(path)
        if saved is None:
            part = fn(cfg, strategy.rank, k, policy, judge, const, mine[k * size:(k + 1) * size], timers)
            save_chunk(path, part.records, part.counts)
        else:
            part = PhaseOut(*saved)
            reused += 1
        for f, recs in part.records.items():
            total.records[f] += recs
        for key, v in part.counts.items():
            total.counts[key] = total.counts.get(key, 0.0) + v
        if ctx.should_stop():
            raise Interrupted(f"stopped in the {name} phase after chunk {k + 1}/{n_chunks}; its records are saved "
                              "in output_dir/rlaif_chunks, rerun the same command to continue")
    if reused:
        ctx.log(f"{name}: {reused}/{n_chunks} chunk(s) read back from {ctx.out / CHUNK_DIR} (rank 0's count)")
    return total


def write_merged(ctx: RunContext, names: List[str]) -> Dict[str, int]:
    """Rank 0 merges every process's saved chunks into the output files; returns their line counts."""
    strategy = ctx.strategy
    strategy.barrier()  # every process's chunks are on disk
    lines: Dict[str, int] = {}
    if strategy.is_main:
        for name, recs in merge_chunks(ctx.out, names).items():
            write_output(ctx.out / name, "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in recs))
            lines[name] = len(recs)
    strategy.barrier()
    return lines


def load_models(ctx: RunContext, tokenizer):
    """(policy Judge, judge Judge): the judge is the policy's own weights unless judge.path is set."""
    cfg, strategy = ctx.cfg, ctx.strategy
    model = load_causal_lm(cfg.model, tokenizer).to(device=strategy.device, dtype=strategy.dtype)
    model.requires_grad_(False)
    model.eval()
    bs = cfg.rlaif.generation_batch_size or 10 ** 9
    policy = Judge(model, tokenizer, batch_size=bs, name="policy")
    j = cfg.judge
    if j.path:
        jm, jt = load_judge_model(j.path, key="judge.path", attn_implementation=cfg.model.attn_implementation)
        jm = jm.to(device=strategy.device, dtype=strategy.dtype)
    else:
        jm, jt = model, tokenizer
    judge = Judge(jm, jt, batch_size=j.batch_size, chat=j.chat_template)
    return policy, judge


def summarise(ctx: RunContext, outs: List[PhaseOut], timers: Timers, lines: Dict[str, int], const,
              prompts_total: int, wall: float) -> dict:
    """The run's counts (over every chunk, saved or computed now) and this run's timings."""
    cfg, strategy = ctx.cfg, ctx.strategy
    local = {k: 0.0 for k in COUNT_KEYS}
    for o in outs:
        for k, v in o.counts.items():
            local[k] += v
    red = strategy.all_reduce_named(local)
    times = strategy.all_reduce_named({"generate": timers.generate, "judge_generate": timers.judge_generate,
                                       "judge_forward": timers.judge_forward, "preferences": timers.preferences}, "max")
    jfwd_t, pref_t = times["judge_forward"], times["preferences"]
    out = {"prompts": prompts_total, "time/generate": round(times["generate"], 3),
           "time/judge_generate": round(times["judge_generate"], 3), "time/judge_forward": round(jfwd_t, 3),
           "time/total": round(wall, 3)}
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
    cfg, rlaif, data = ctx.cfg, ctx.cfg.rlaif, ctx.cfg.data
    summary = read_done(ctx.out)
    if summary is None:
        summary = make_data(ctx)
    else:
        ctx.log(f"RLAIF phases already finished in {ctx.out} (output_dir/{CHUNK_DIR}/{DONE}); continuing")
    if rlaif.then != "none":
        summary["then"] = {"stage": rlaif.then, "output_dir": str(Path(cfg.output_dir) / rlaif.then)}
        made = ctx.out / ("sl_data.jsonl" if rlaif.then == "sft" else "preferences.jsonl")
        if rlaif.then != "sft" and summary.get("pairs_kept", 0) < 2:
            from rlhf_cli.errors import DataError

            raise DataError(f"rlaif.then={rlaif.then}: {made} has {summary.get('pairs_kept', 0)} pairs (need >= 2); "
                            "lower rlaif.min_confidence or use more prompts")
        from rlhf_cli.stages import get_runner
        from rlhf_cli.training.chain import run_next_stage

        run_next_stage(ctx, rlaif.then, get_runner(rlaif.then), made, list(rlaif.then_overrides), rlaif.then_conf)
    # last: a manifest means "finished", so an interrupted rlaif.then stage must not find one
    write_manifest(ctx, summary, {"data.path": data.path})
    ctx.log(f"Done: {ctx.out}")
    return summary


def make_data(ctx: RunContext) -> dict:
    """Both phases, resumable chunk by chunk; writes the merged files and done.json; returns the summary."""
    cfg, strategy, rlaif, data = ctx.cfg, ctx.strategy, ctx.cfg.rlaif, ctx.cfg.data
    t_start = time.time()
    const = load_constitution(rlaif.constitution)
    tokenizer = load_tokenizer(cfg.model)
    prompts, st = load_rlaif_prompts(data.path, data, tokenizer,
                                     max_prompt_tokens=data.max_length - rlaif.max_new_tokens, limit=data.limit,
                                     need_pair=rlaif.responses == "data" and rlaif.phases != "sl")
    mine = prompts[strategy.rank::strategy.world_size]
    # the same on every process (stop checks are collectives)
    n_chunks = math.ceil(math.ceil(len(prompts) / strategy.world_size) / rlaif.chunk_prompts)
    no_pair = f", {st.no_pair} without a single-turn pair" if st.no_pair else ""
    ctx.log(f"RLAIF data: {st.records} records ({st.skipped} skipped, {st.too_long} over the prompt budget"
            f"{no_pair}) -> "
            f"{len(prompts)} prompts, {len(mine)} on this process in {n_chunks} chunk(s); phases={rlaif.phases}; "
            f"constitution {const.path.name} ({len(const.principles)} principles, sha256 {const.sha256[:12]}); "
            f"judge {judge_dir_name(cfg.judge.path)}; {strategy.world_size} process(es), "
            f"precision {strategy.precision}")
    policy, judge = load_models(ctx, tokenizer)
    timers, outs, names = Timers(), [], []
    if rlaif.phases in ("sl", "both"):
        outs.append(run_phase(ctx, "sl", cai_sl, mine, n_chunks, policy, judge, const, timers))
        names += SL_FILES
        ctx.log(f"CAI-SL: {rlaif.revisions} critique/revision round(s) on {len(mine)} prompts (this process)")
    if rlaif.phases in ("preferences", "both"):
        outs.append(run_phase(ctx, "preferences", rl_aif, mine, n_chunks, policy, judge, const, timers))
        names += PREFERENCE_FILES
    lines = write_merged(ctx, names)
    summary = summarise(ctx, outs, timers, lines, const, len(prompts), time.time() - t_start)
    ctx.metrics.write(1, {k: v for k, v in summary.items() if isinstance(v, (int, float))})
    report = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
                       if isinstance(v, (int, float)))
    ctx.log(f"RLAIF: {report}; files {summary['files']}")
    if strategy.is_main:
        write_done(ctx.out, summary)
        drop_chunks(ctx.out)
    strategy.barrier()
    del policy, judge
    gc.collect()
    return summary
