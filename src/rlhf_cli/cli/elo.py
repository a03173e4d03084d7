"""`rlhf elo FILE [FILE ...] [k=4 base=10 scale=400 init=1000 bootstrap=1000 seed=0 reg=0.001 ci=0.95
soft=false out=FILE] [--json]`: ratings from judgements (see feedback/judgements.py for the shapes)."""
from __future__ import annotations

import json
from typing import List, Sequence

from rlhf_cli.cli.args import parse_kv
from rlhf_cli.errors import ConfigError
from rlhf_cli.output_files import output_file, write_output

OPTIONS = {"k": float, "base": float, "scale": float, "init": float, "bootstrap": int, "seed": int, "reg": float,
           "ci": float, "soft": bool, "out": str}


def split_files(words: Sequence[str]):
    files = [w for w in words if "=" not in w]
    return files, [w for w in words if "=" in w]


def compute(words: Sequence[str]) -> dict:
    from rlhf_cli.feedback.elo import rate
    from rlhf_cli.feedback.judgements import read_judgements

    files, kv = split_files(words)
    opts = parse_kv(kv, OPTIONS, "elo")
    if not files:
        raise ConfigError("elo: give one or more judgement files (rankings.jsonl, pairwise or preference JSONL)")
    if opts.get("base", 10.0) <= 1 or opts.get("scale", 400.0) <= 0 or not 0 < opts.get("ci", 0.95) < 1:
        raise ConfigError("elo: needs base > 1, scale > 0 and 0 < ci < 1")
    if opts.get("bootstrap", 0) < 0 or opts.get("reg", 1e-3) < 0:
        raise ConfigError("elo: bootstrap and reg must be >= 0")
    out = opts.pop("out", None)
    out = output_file(out, files, "elo") if out else None
    judgements = read_judgements(files, soft=opts.pop("soft", False))
    if "bootstrap" in opts:
        opts["rounds"] = opts.pop("bootstrap")
    result = {"files": files, **rate(judgements, **opts)}
    if out:
        write_output(out, json.dumps(result, indent=2) + "\n")
    return result


def _fmt(x, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    ci = int(round(result["settings"]["ci"] * 100))
    t = Table(title=f"ratings from {result['judgements']} judgements ({result['battles']} battles)")
    for col in ("#", "model", "BT", f"{ci}% CI", "online Elo", "battles", "W/T/L", "win rate"):
        t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for i, r in enumerate(result["ratings"], 1):
        t.add_row(str(i), r["model"], _fmt(r["bt"]), f"{_fmt(r['ci_low'])}-{_fmt(r['ci_high'])}", _fmt(r["elo"]),
                  str(r["battles"]), f"{r['wins']:g}/{r['ties']:g}/{r['losses']:g}", _fmt(r["win_rate"], ".1%"))
    con.print(t)
    con.print("BT: Bradley-Terry/Plackett-Luce fit on the Elo scale (400 log10 odds, mean 1000)")
    models = [r["model"] for r in result["ratings"]]
    if len(models) > 1:
        w = Table(title="win rate of row over column (ties count half)")
        w.add_column("")
        for m in models:
            w.add_column(m, justify="right")
        for a in models:
            w.add_row(a, *["" if a == b else _fmt(result["win_rate"][a][b], ".0%") for b in models])
        con.print(w)
    ag = result.get("agreement")
    if ag:
        con.print(f"agreement of {len(ag['annotators'])} annotators on {ag['units']} shared pairs: "
                  f"{ag['pairwise_agreement']:.1%} pairwise, Fleiss kappa {_fmt(ag['fleiss_kappa'], '.3f')}, "
                  f"mean Cohen kappa {_fmt(ag['cohen_kappa_mean'], '.3f')}")


def run_elo(words: List[str], as_json: bool) -> None:
    result = compute(words)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
