"""`rlhf report`: render from fixture run dirs; check the images and what was plotted."""
import json
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import rlhf

from rlhf_cli.errors import ConfigError
from rlhf_cli.report.plots import render_report


def make_run(root: Path, name: str, stage: str, rows, torn: bool = False) -> Path:
    d = root / name
    d.mkdir()
    (d / "config.yaml").write_text(f"stage: {stage}\noutput_dir: {d}\n")
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if torn:
        text += '{"step": 99, "lo'  # a run killed mid-write
    (d / "metrics.jsonl").write_text(text)
    return d


@pytest.fixture
def runs(tmp_path):
    sft_a = make_run(tmp_path, "sft-a", "sft", [
        {"step": s, "loss": 2.0 / s, "lr": 1e-4 * s, "tokens_per_s": 900.0 + s, "grad_norm": 1.0} for s in range(1, 9)
    ] + [{"step": 4, "eval/loss": 0.7}, {"step": 8, "eval/loss": 0.4}], torn=True)
    sft_b = make_run(tmp_path, "sft-b", "sft", [{"step": s, "loss": 3.0 / s, "lr": 2e-4} for s in range(1, 6)])
    dpo = make_run(tmp_path, "dpo-x", "dpo", [
        {"step": s, "loss": 0.69 - 0.01 * s, "accuracy": 0.5 + 0.05 * s, "reward/margin": 0.1 * s, "kl": 0.01 * s}
        for s in range(1, 5)] + [{"step": 4, "eval/accuracy": 0.8, "eval/gsm8k_accuracy": 0.1}])
    return tmp_path, [sft_a, sft_b, dpo]


def png_pixels(path):
    import matplotlib.image as mpimg

    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def test_png_per_family(runs):
    root, dirs = runs
    figs = render_report([str(d) for d in dirs], str(root / "out" / "rep.png"))
    by = {f.family: f.as_dict() for f in figs}
    assert set(by) == {"sft", "dpo"}
    assert by["sft"]["file"].endswith("rep-sft.png") and by["dpo"]["file"].endswith("rep-dpo.png")
    sft = by["sft"]["panels"]
    # loss: 2 runs + sft-a's eval points; lr: 2 runs; tokens/s: sft-a only. grad_norm has no panel.
    assert [(s["run"], s["key"], s["kind"]) for s in sft["loss"]] == [
        ("sft-a", "loss", "line"), ("sft-a", "eval/loss", "eval"), ("sft-b", "loss", "line")]
    assert [s["points"] for s in sft["loss"]] == [8, 2, 5]  # the torn last line is ignored
    assert list(sft) == ["loss", "lr", "tokens/s"] and by["sft"]["series"] == 6
    dpo = by["dpo"]["panels"]
    assert list(dpo) == ["loss", "reward", "kl", "accuracy", "eval/gsm8k_accuracy"]
    assert [s["key"] for s in dpo["accuracy"]] == ["accuracy", "eval/accuracy"]
    assert by["dpo"]["series"] == 6
    for f in figs:
        px = png_pixels(f.file)
        assert px.shape[0] > 200 and px.shape[1] > 400 and float(np.std(px)) > 0.01  # not blank


def test_grpo_reward_functions_get_a_panel_with_std_bands(tmp_path):
    rows = [{"step": s, "loss": 0.1, "reward": 0.2 * s, "reward_std": 0.1, "reward/lower": 0.1 * s,
             "reward/lower_std": 0.05, "reward/gsm8k": 0.05 * s, "kl": 0.01} for s in range(1, 6)]
    a = make_run(tmp_path, "grpo-a", "grpo", rows)
    [fig] = render_report([str(a)], str(tmp_path / "g.png"))
    panels = fig.as_dict()["panels"]
    assert list(panels) == ["loss", "reward", "kl", "reward functions"]
    assert [s["key"] for s in panels["reward"]] == ["reward"]  # the functions (and stds) are not on it
    assert [(s["key"], s["kind"], s["points"]) for s in panels["reward functions"]] == [
        ("reward/gsm8k", "line", 5), ("reward/lower", "band", 5)]  # a +-std band where the std was logged
    b = make_run(tmp_path, "grpo-b", "grpo", [{"step": 1, "reward/lower": 0.3}, {"step": 2, "reward/lower": 0.4}])
    [fig] = render_report([str(a), str(b)], str(tmp_path / "two.png"))
    assert [(s.run, s.key) for s in fig.panels["reward functions"]] == [
        ("grpo-a", "reward/gsm8k"), ("grpo-a", "reward/lower"), ("grpo-b", "reward/lower")]
    one = make_run(tmp_path, "grpo-one", "grpo", [{"step": 1, "reward": 0.3, "reward/lower": 0.3}])
    assert "reward functions" not in render_report([str(one)], str(tmp_path / "o.png"))[0].panels
    # a DPO run's reward/chosen, reward/margin... stay on the reward panel: no functions panel
    d = make_run(tmp_path, "dpo-y", "dpo", [{"step": 1, "loss": 0.6, "reward/chosen": 0.1, "reward/margin": 0.2}])
    assert "reward functions" not in render_report([str(d)], str(tmp_path / "d.png"))[0].panels


def test_elo_chart_and_html(runs, tmp_path):
    _, dirs = runs
    elo = tmp_path / "elo.json"
    elo.write_text(json.dumps({"ratings": [
        {"model": "sft", "bt": 950.0, "ci_low": 900.0, "ci_high": 990.0, "elo": 960.0, "battles": 40},
        {"model": "dpo", "bt": 1050.0, "ci_low": 1010.0, "ci_high": 1100.0, "elo": 1040.0, "battles": 40}]}))
    figs = render_report([str(dirs[2])], str(tmp_path / "one.png"), elo=str(elo))
    assert [f.family for f in figs] == ["dpo", "elo"]
    assert [s.run for s in figs[1].panels["ratings"]] == ["sft", "dpo"]  # ascending: best drawn on top
    assert png_pixels(tmp_path / "one-elo.png").shape[0] > 100
    page = tmp_path / "page.html"
    figs = render_report([str(d) for d in dirs], str(page), elo=str(elo))
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 3 and len(html) > 20000
    assert not list(tmp_path.glob("page*.png"))


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match="no metrics.jsonl"):
        render_report([str(tmp_path)], str(tmp_path / "x.png"))
    with pytest.raises(ConfigError, match="must end in .png or .html"):
        render_report([str(tmp_path)], str(tmp_path / "x.pdf"))


def test_cli(runs):
    root, dirs = runs
    out = rlhf(["report", str(dirs[0]), str(dirs[1]), f"out={root / 'cli.png'}", "--json"]).stdout
    figs = json.loads(out)
    assert len(figs) == 1 and figs[0]["series"] == 6 and Path(figs[0]["file"]).stat().st_size > 10000
    bad = rlhf(["report", str(root / "nope"), f"out={root / 'x.png'}"], check=False)
    assert bad.returncode == 2 and "no metrics.jsonl" in bad.stderr and "Traceback" not in bad.stderr
