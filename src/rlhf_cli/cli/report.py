"""`rlhf report RUN [RUN ...] [elo=ELO.json] out=FILE.png|FILE.html`: plots of runs' metrics.jsonl (one
figure per run family, runs overlaid, eval points marked) and of an `rlhf elo` result."""
from __future__ import annotations

import json
from typing import List

from rlhf_cli.cli.args import parse_kv
from rlhf_cli.errors import ConfigError

OPTIONS = {"out": str, "elo": str}


def run_report(words: List[str], as_json: bool = False) -> None:
    from rlhf_cli.report.plots import render_report

    runs = [w for w in words if "=" not in w]
    opts = parse_kv([w for w in words if "=" in w], OPTIONS, "report")
    if not runs and not opts.get("elo"):
        raise ConfigError("report: give run dirs (and/or elo=ELO.json) and out=FILE.png or out=FILE.html")
    figs = render_report(runs, opts.get("out", "report.png"), opts.get("elo"))
    if as_json:
        print(json.dumps([f.as_dict() for f in figs], indent=2))
        return
    for f in figs:
        d = f.as_dict()
        print(f"{f.family}: {f.file} ({len(d['panels'])} panels, {d['series']} series)")
