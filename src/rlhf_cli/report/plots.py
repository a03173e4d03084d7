"""Figures of training runs (metrics.jsonl against step) and of Elo ratings, with matplotlib's Agg backend.

One figure per run *family* (the stage in the run's config.yaml, else manifest.json, else the directory
name before its first '-'): a grid of panels — loss, reward, KL, accuracy, lr, tokens/s, response length —
with every run of the family overlaid as lines, and the ``eval/*`` values of a metric marked as points on
its panel (``eval/loss`` on the loss panel; an eval metric with no train counterpart gets its own panel).
Each function returns what it drew, so callers and tests can check it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from rlhf_cli.errors import ConfigError, DataError

# panel title -> metric keys drawn on it (the first key a run has is its main line; all present are drawn)
PANELS = {
    "loss": ["loss", "policy_loss", "value_loss", "ptx_loss"],
    "reward": ["reward", "reward/margin", "reward/chosen", "reward/rejected", "reward/mean", "reward_mean",
               "margin", "score"],
    "kl": ["kl"],
    "accuracy": ["accuracy", "step_accuracy"],
    "lr": ["lr"],
    "tokens/s": ["tokens_per_s", "gen_tokens_per_s"],
    "response length": ["response_length"],
}
# RL stages log each reward function's batch mean and std as reward/<name>, reward/<name>_std (rl/rollout.py)
FUNCTIONS_PANEL, FUNCTION_PREFIX, STD_SUFFIX = "reward functions", "reward/", "_std"
_FIXED_KEYS = {k for keys in PANELS.values() for k in keys}


def function_keys(keys) -> List[str]:
    """The per-function reward means among ``keys`` (not the fixed reward keys, not the stds)."""
    return sorted(k for k in keys if k.startswith(FUNCTION_PREFIX) and k not in _FIXED_KEYS
                  and not k.endswith(STD_SUFFIX))


@dataclass
class Run:
    path: Path
    name: str
    family: str
    rows: List[dict]


@dataclass
class Series:
    run: str
    key: str
    kind: str  # "line" (train metric) | "eval" (points)
    points: int


@dataclass
class Figure:
    family: str
    file: str
    panels: Dict[str, List[Series]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"family": self.family, "file": self.file,
                "panels": {p: [s.__dict__ for s in ss] for p, ss in self.panels.items()},
                "series": sum(len(ss) for ss in self.panels.values())}


def _family(path: Path) -> str:
    cfg = path / "config.yaml"
    if cfg.exists():
        import yaml

        try:
            stage = (yaml.safe_load(cfg.read_text()) or {}).get("stage")
        except yaml.YAMLError:
            stage = None
        if isinstance(stage, str) and stage:
            return stage
    man = path / "manifest.json"
    if man.exists():
        try:
            stage = json.loads(man.read_text()).get("stage")
            if isinstance(stage, str) and stage:
                return stage
        except json.JSONDecodeError:
            pass
    return path.name.split("-")[0] or "run"


def load_run(path: str) -> Run:
    p = Path(path)
    f = p / "metrics.jsonl"
    if not f.exists():
        raise ConfigError(f"report: {path}: no metrics.jsonl (not a run dir)")
    rows = []
    lines = f.read_text().splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # a run killed mid-write leaves a torn last line
                break
            raise DataError(f"{f}:{i}: invalid JSON") from None
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    return Run(p, p.name, _family(p), rows)


def _xy(rows: Sequence[dict], key: str):
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)]
    return [x for x, _ in pts], [y for _, y in pts]


def plan_panels(runs: Sequence[Run]) -> Dict[str, List[tuple]]:
    """{panel: [(run, key, kind)]} for the keys these runs logged."""
    keys = {k for r in runs for row in r.rows for k in row}
    out: Dict[str, List[tuple]] = {}
    used_evals = set()
    for title, names in PANELS.items():
        entries = []
        for run in runs:
            for k in names:
                if k in keys and _xy(run.rows, k)[0]:
                    entries.append((run, k, "line"))
                if f"eval/{k}" in keys and _xy(run.rows, f"eval/{k}")[0]:
                    entries.append((run, f"eval/{k}", "eval"))
                    used_evals.add(f"eval/{k}")
        if entries:
            out[title] = entries
    functions = [(run, k, "line") for run in runs for k in function_keys(keys) if _xy(run.rows, k)[0]]
    if len({k for _, k, _ in functions}) > 1:  # one function's line would repeat the reward panel's
        out[FUNCTIONS_PANEL] = functions
    for k in sorted(k for k in keys if k.startswith("eval/") and k not in used_evals):
        entries = [(run, k, "eval") for run in runs if _xy(run.rows, k)[0]]
        if entries:
            out[k] = entries
    return out


def _std_band(rows: Sequence[dict], key: str):
    """(steps, mean - std, mean + std) where a row has both ``key`` and ``key``_std; None where none has."""
    std = key + STD_SUFFIX
    pts = [(r["step"], r[key], r[std]) for r in rows
           if isinstance(r.get(key), (int, float)) and isinstance(r.get(std), (int, float))]
    if not pts:
        return None
    return [x for x, _, _ in pts], [m - s for _, m, s in pts], [m + s for _, m, s in pts]


def _grid(n: int):
    cols = min(3, max(1, n))
    return (n + cols - 1) // cols, cols


def plot_family(runs: Sequence[Run], out: Path, title: str) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = plan_panels(runs)
    fig_rec = Figure(runs[0].family, str(out))
    if not panels:
        raise DataError(f"report: no plottable metrics in {', '.join(str(r.path) for r in runs)}")
    rows, cols = _grid(len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    colors = {r.name: f"C{i % 10}" for i, r in enumerate(runs)}
    for ax, (ptitle, entries) in zip(axes.flat, panels.items()):
        drawn = []
        functions = function_keys({k for _, k, _ in entries}) if ptitle == FUNCTIONS_PANEL else []
        for run, key, kind in entries:
            xs, ys = _xy(run.rows, key)
            main = PANELS.get(ptitle, [key])[0]
            label = run.name if key in (main, f"eval/{main}") else f"{run.name} {key}"
            if ptitle == FUNCTIONS_PANEL:  # one line per function: its name, a colour per function
                i = functions.index(key)
                name = key[len(FUNCTION_PREFIX):]
                if len(runs) == 1:
                    label, color, style = name, f"C{i % 10}", "-"
                else:  # a colour per run (as on every panel), a line style per function
                    label, color, style = f"{run.name} {name}", colors[run.name], ["-", "--", ":", "-."][i % 4]
                ax.plot(xs, ys, style, color=color, linewidth=1.4, label=label)
                band = _std_band(run.rows, key)
                if band:
                    ax.fill_between(band[0], band[1], band[2], color=color, alpha=0.15, linewidth=0)
                drawn.append(Series(run.name, key, "band" if band else kind, len(xs)))
                continue
            if kind == "eval":
                ax.plot(xs, ys, linestyle="none", marker="o", color=colors[run.name], label=f"{label} (eval)")
            else:
                style = "-" if key == main else "--"
                ax.plot(xs, ys, style, color=colors[run.name], linewidth=1.4, label=label)
            drawn.append(Series(run.name, key, kind, len(xs)))
        ax.set_title(ptitle)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ptitle == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.legend(fontsize=7)
        fig_rec.panels[ptitle] = drawn
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return fig_rec


def plot_elo(result: dict, out: Path) -> Figure:
    """Horizontal bars: each model's BT rating (Elo scale) with its bootstrap interval, best on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratings = result.get("ratings")
    if not isinstance(ratings, list) or not ratings or not all("bt" in r and "model" in r for r in ratings):
        raise DataError("report: the elo file has no ratings (expected the output of rlhf elo --json / out=)")
    rs = sorted(ratings, key=lambda r: r["bt"])  # ascending: the best is drawn at the top
    ys = list(range(len(rs)))
    bt = [r["bt"] for r in rs]
    lo = [r["bt"] - r["ci_low"] if r.get("ci_low") is not None else 0 for r in rs]
    hi = [r["ci_high"] - r["bt"] if r.get("ci_high") is not None else 0 for r in rs]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rs) + 1.5))
    ax.errorbar(bt, ys, xerr=[lo, hi], fmt="o", capsize=4, color="C0", label="BT rating, bootstrap CI")
    if all(r.get("elo") is not None for r in rs):
        ax.plot([r["elo"] for r in rs], ys, "x", color="C3", label="online Elo")
    ax.set_yticks(ys, [f"{r['model']} ({r.get('battles', '?')})" for r in rs])
    ax.axvline(result.get("settings", {}).get("init", 1000), color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("rating (Elo scale)")
    ax.set_title("model ratings (battles in parentheses)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Figure("elo", str(out), {"ratings": [Series(r["model"], "bt", "interval", 1) for r in rs]})


def _family_file(out: Path, family: str, several: bool) -> Path:
    return out.with_name(f"{out.stem}-{family}{out.suffix}") if several else out


def render_report(run_dirs: Sequence[str], out: str, elo: Optional[str] = None) -> List[Figure]:
    """Write the figures; ``out`` ending in .png gives one PNG per family (``NAME-FAMILY.png`` when there
    are several, ``NAME-elo.png`` for ratings), .html one page embedding them all."""
    import base64
    import tempfile

    out_p = Path(out)
    if out_p.suffix.lower() not in (".png", ".html"):
        raise ConfigError(f"report: out={out}: must end in .png or .html")
    runs = [load_run(d) for d in run_dirs]
    families: Dict[str, List[Run]] = {}
    for r in runs:
        families.setdefault(r.family, []).append(r)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    html = out_p.suffix.lower() == ".html"
    work = Path(tempfile.mkdtemp(prefix="rlhf-report-")) if html else out_p.parent
    base = work / (out_p.stem + ".png")
    several = len(families) + bool(elo) > 1
    figs = []
    for fam, rs in families.items():
        figs.append(plot_family(rs, _family_file(base, fam, several), f"{fam}: {', '.join(r.name for r in rs)}"))
    if elo:
        try:
            result = json.loads(Path(elo).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"report: elo={elo}: cannot read JSON ({e})") from None
        figs.append(plot_elo(result, _family_file(base, "elo", several)))
    if html:
        parts = ["<!doctype html><meta charset='utf-8'><title>rlhf report</title>",
                 "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}</style><h1>rlhf report</h1>"]
        for f in figs:
            data = base64.b64encode(Path(f.file).read_bytes()).decode()
            parts.append(f"<h2>{f.family}</h2><img alt='{f.family}' src='data:image/png;base64,{data}'>")
            Path(f.file).unlink()
            f.file = str(out_p)
        out_p.write_text("\n".join(parts) + "\n")
        work.rmdir()
    return figs
