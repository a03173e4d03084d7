"""`rlhf label prompts=FILE models=[runs/sft,runs/dpo] k=4 out=rankings.jsonl annotator=NAME` (or
candidates=FILE instead of prompts/models): rank responses in the terminal; rerun to resume."""
from __future__ import annotations

import getpass
from typing import List, Sequence

from rlhf_cli.cli.args import parse_kv
from rlhf_cli.errors import ConfigError
from rlhf_cli.output_files import output_file

OPTIONS = {"prompts": str, "candidates": str, "models": str, "k": int, "out": str, "annotator": str, "seed": int,
           "max_new_tokens": int, "temperature": float, "top_p": float, "prompt_field": str, "limit": int,
           "keys": str}


def model_list(value: str) -> List[str]:
    """'[runs/sft,runs/dpo]' or 'runs/sft,runs/dpo' -> ['runs/sft', 'runs/dpo']."""
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    out = [x.strip().strip("'\"") for x in v.split(",") if x.strip()]
    if not out:
        raise ConfigError("label: models=[...] names no model")
    return out


def prepare(words: Sequence[str], log=print) -> dict:
    """Everything the app needs: the items still to label (in file order) and where to write."""
    from rlhf_cli.feedback.candidates import read_candidates, read_prompts, sample_items
    from rlhf_cli.feedback.rankings_io import done_keys, item_key, skipped_path

    o = parse_kv(words, OPTIONS, "label")
    if not o.get("out"):
        raise ConfigError("label: out=rankings.jsonl is required")
    if bool(o.get("candidates")) == bool(o.get("prompts")):
        raise ConfigError("label: give prompts=FILE (with models=[...]) or candidates=FILE")
    output_file(o["out"], [o[k] for k in ("prompts", "candidates", "keys") if o.get(k)], "label")
    annotator = o.get("annotator") or getpass.getuser() or "anonymous"
    seed, field = o.get("seed", 0), o.get("prompt_field", "prompt")
    done = done_keys(o["out"], annotator)
    if o.get("candidates"):
        if "models" in o or "k" in o:
            raise ConfigError("label: models= and k= sample candidates; they do not go with candidates=FILE")
        all_items = read_candidates(o["candidates"], seed, field)
        total = len(all_items)
        items = [it for it in all_items if item_key(it.prompt) not in done]
    else:
        if not o.get("models"):
            raise ConfigError("label: prompts=FILE needs models=[RUN_OR_MODEL_DIR,...] to sample from")
        k = o.get("k", 4)
        if k < 2:
            raise ConfigError(f"label: k={k}: a ranking needs at least 2 responses")
        prompts = read_prompts(o["prompts"], field)
        total = len(prompts)
        todo = [(i, p) for i, p in enumerate(prompts) if item_key(p[0]) not in done]
        if o.get("limit"):
            todo = todo[: o["limit"]]
        items = sample_items([p for _, p in todo], model_list(o["models"]), k, seed, o.get("max_new_tokens", 128),
                             o.get("temperature", 1.0), o.get("top_p", 1.0), log,
                             indices=[i for i, _ in todo]) if todo else []
    usable = [it for it in items if len(it.responses) >= 2]
    if len(usable) < len(items):
        log(f"{len(items) - len(usable)} prompt(s) have fewer than 2 non-empty responses; not shown")
    return {"items": usable, "out": o["out"], "skipped": str(skipped_path(o["out"])), "annotator": annotator,
            "done_before": len(done), "total": total}


def scripted_keys(path: str) -> List[List[str]]:
    """keys=FILE: one line per item, the keys a person would press (Textual names, space-separated),
    e.g. ``1 = 2 enter`` or ``s``; blank lines and # comments are ignored."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"label: keys={path}: file not found")
    lines = [ln.split("#")[0].split() for ln in p.read_text().splitlines()]
    return [ln for ln in lines if ln]


def run_scripted(app, script: List[List[str]]) -> dict:
    """Drive the real app headless with scripted key presses (SMOKE pipelines, demos): one line of the
    script per item, then quit. Returns what the session saved."""
    import asyncio

    async def session():
        async with app.run_test() as pilot:
            for keys in script[:len(app.items)]:
                await pilot.press(*keys)
            await pilot.pause()
        return dict(app.saved)

    return asyncio.run(session())


def run_label(words: Sequence[str]) -> None:
    from rlhf_cli.feedback.label_app import LabelApp

    s = prepare(words)
    keys = parse_kv(words, OPTIONS, "label").get("keys")
    if not s["items"]:
        print(f"nothing left to label for {s['annotator']}: {s['done_before']} of {s['total']} prompts done "
              f"in {s['out']}")
        return
    app = LabelApp(**s)
    saved = run_scripted(app, scripted_keys(keys)) if keys else (app.run() or {})
    print(f"ranked {saved.get('ranked', 0)}, skipped {saved.get('skipped', 0)}, all bad {saved.get('all_bad', 0)} "
          f"this session; rankings in {s['out']} (train on them: rlhf train rm data.path={s['out']} "
          f"data.format=ranking; rate the models: rlhf elo {s['out']})")
