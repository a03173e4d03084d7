"""RLAIF end to end on the tiny random Llama (real tokenizer), CPU: both phases, the written files'
schemas and counts, determinism, then=dpo, the judge reward inside GRPO, the smoke pipeline script, and
one-line errors for bad constitutions and judge dirs."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO, TINY, metrics, rlhf, save_tiny_judge
from rlhf_cli.config.compose import compose
from rlhf_cli.data.preference import load_preferences
from rlhf_cli.data.rlaif import CHAIN_FIELDS, PREF_FIELDS, ROUND_FIELDS
from rlhf_cli.data.sft import load_sft_examples

FAST = [*TINY, "rlaif.max_new_tokens=12", "judge.max_new_tokens=8"]


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory, tokenizer):
    return save_tiny_judge(tokenizer, tmp_path_factory.mktemp("judge"), seed=1)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    out = tmp_path_factory.mktemp("rlaif") / "run"
    proc = rlhf(["train", "rlaif", *FAST, "data.limit=6", "rlaif.revisions=2", "rlaif.num_responses=3",
                 f"output_dir={out}"])
    return out, proc


@pytest.mark.e2e
def test_both_phases_write_well_formed_files(both, tokenizer):
    out, proc = both
    assert "RLAIF data: 6 records" in proc.stdout
    sl, chains, prefs = lines(out / "sl_data.jsonl"), lines(out / "sl_chains.jsonl"), lines(out / "preferences.jsonl")
    assert len(sl) == len(chains) == 6
    for rec, chain in zip(sl, chains):
        assert set(rec) == {"messages"} and rec["messages"][-1]["role"] == "assistant"
        assert rec["messages"][0] == {"role": "user", "content": chain["prompt"]}
        assert set(CHAIN_FIELDS) <= set(chain) and len(chain["rounds"]) == 2
        assert all(set(ROUND_FIELDS) <= set(r) for r in chain["rounds"])
        assert rec["messages"][-1]["content"] == chain["final_response"]
    m = json.loads((out / "manifest.json").read_text())["metrics"]
    assert m["sl_examples"] == 6 and m["pairs_judged"] + m["pairs_identical_or_empty"] == 6 * 3  # K=3: 3 pairs
    assert len(prefs) == m["pairs_kept"] == m["pairs_judged"]  # min_confidence 0.5 keeps every judged pair
    assert m["files"] == {"sl_data.jsonl": 6, "sl_chains.jsonl": 6, "preferences.jsonl": len(prefs)}
    principles = {p for p in json.loads((out / "manifest.json").read_text())["config"]["rlaif"].values()
                  if isinstance(p, str)}
    assert principles  # config recorded
    for rec in prefs:
        assert set(PREF_FIELDS) <= set(rec) and rec["chosen"] != rec["rejected"]
        assert 0.5 <= rec["judge_prob"] <= 1.0 and isinstance(rec["order_flip"], bool)
        p1, p2 = rec["orders"]  # P(chosen) in each order: average = judge_prob, flip = the orders disagree
        assert (p1 + p2) / 2 == pytest.approx(rec["judge_prob"], abs=2e-6)
        assert rec["order_flip"] == ((p1 > 0.5) != (p2 > 0.5))
    flips = sum(r["order_flip"] for r in prefs)
    assert m["position_bias_rate"] == pytest.approx(flips / m["pairs_judged"])
    default = REPO / "conf" / "constitution" / "default.yaml"
    assert m["constitution"]["sha256"] == hashlib.sha256(default.read_bytes()).hexdigest()
    assert m["judge"]["path"] == "policy"
    assert {"time/generate", "time/judge_generate", "time/judge_forward"} <= set(metrics(out)[0])
    # the sft stage reads sl_data.jsonl, rm and dpo read preferences.jsonl, as they are
    sft = compose("sft", None, ["model=tiny", f"data.path={out / 'sl_data.jsonl'}"])
    ex, st = load_sft_examples(sft.data.path, sft.data, tokenizer)
    assert len(ex) == 6 and st.skipped == 0 and all(sum(e.loss_mask) > 0 for e in ex)
    for stage, kind in (("rm", "outcome"), ("dpo", "pairs")):
        c = compose(stage, None, ["model=tiny", f"data.path={out / 'preferences.jsonl'}"])
        items, st = load_preferences(c.data.path, c.data, tokenizer, kind)
        assert len(items) == len(prefs) and st.skipped == 0


@pytest.mark.e2e
def test_same_seed_same_files_other_seed_differs(both, tmp_path):
    out, _ = both
    again, other = tmp_path / "again", tmp_path / "other"
    args = ["train", "rlaif", *FAST, "data.limit=6", "rlaif.revisions=2", "rlaif.num_responses=3"]
    rlhf([*args, f"output_dir={again}"])
    for name in ("sl_data.jsonl", "sl_chains.jsonl", "preferences.jsonl"):
        assert (again / name).read_text() == (out / name).read_text(), name
    rlhf([*args, "seed=7", "rlaif.phases=preferences", f"output_dir={other}"])
    assert (other / "preferences.jsonl").read_text() != (out / "preferences.jsonl").read_text()
    assert not (other / "sl_data.jsonl").exists()


@pytest.mark.e2e
def test_cot_clamp_min_confidence_and_then_dpo(tmp_path, judge_dir):
    out = tmp_path / "run"
    proc = rlhf(["train", "rlaif", *FAST, "data.limit=6", "rlaif.phases=preferences", "rlaif.num_responses=3",
                 f"judge.path={judge_dir}", "rlaif.cot=true", "rlaif.cot_clamp=[0.3,0.7]", "rlaif.then=dpo",
                 "rlaif.then_overrides=['train.max_steps=2','data.eval_fraction=0']", f"output_dir={out}"])
    prefs = lines(out / "preferences.jsonl")
    # the judge's probabilities are the labels the DPO stage trains on (soft labels)
    assert f"{len(prefs)} pairs with soft labels (judge_prob)" in proc.stdout
    m = json.loads((out / "manifest.json").read_text())["metrics"]
    assert m["judge"]["path"] == str(judge_dir) and m["judge"]["cot"] is True
    assert len(prefs) == m["pairs_kept"] and m["pairs_kept"] + m["pairs_dropped_low_confidence"] == m["pairs_judged"]
    for rec in prefs:  # each order's probability was clamped to [0.3, 0.7]
        assert all(0.3 - 1e-6 <= p <= 0.7 + 1e-6 for p in rec["orders"])
        assert 0.5 <= rec["judge_prob"] <= 0.7 + 1e-6
    assert m["time/judge_generate"] > 0  # the reasoning was generated
    dpo = out / "dpo"
    dm = json.loads((dpo / "manifest.json").read_text())
    assert dm["stage"] == "dpo" and dm["data"]["data.path"]["path"] == str(out / "preferences.jsonl")
    assert [r["step"] for r in metrics(dpo) if "loss" in r] == [1, 2]
    assert (dpo / "final" / "model.safetensors").exists()
    assert json.loads((out / "manifest.json").read_text())["metrics"]["then"]["stage"] == "dpo"


@pytest.mark.e2e
def test_two_processes_merge_shards_and_then_sft(tmp_path):
    out = tmp_path / "run"
    proc = rlhf(["train", "rlaif", *FAST, "data.limit=5", "rlaif.num_responses=2", "rlaif.then=sft",
                 "rlaif.then_overrides=['train.max_steps=1','data.eval_fraction=0','data.packing=false',"
                 "'train.micro_batch_size=1']", f"output_dir={out}",
                 "--nproc", "2"])
    assert "3 on this process" in proc.stdout  # rank 0 takes prompts 0, 2, 4
    sl = lines(out / "sl_data.jsonl")
    chains = lines(out / "sl_chains.jsonl")
    assert len(sl) == 5 and not (out / ".shards").exists()
    hh = [json.loads(x) for x in (REPO / "examples" / "hh_harmless_sample.jsonl").read_text().splitlines()[:5]]
    firsts = [h["chosen"].split("\n\nHuman: ")[1].split("\n\nAssistant:")[0].strip() for h in hh]
    assert [c["prompt"] for c in chains] == firsts  # merged back in prompt order
    assert json.loads((out / "manifest.json").read_text())["world_size"] == 2
    assert (out / "sft" / "final" / "model.safetensors").exists()


@pytest.mark.e2e
def test_judge_reward_inside_grpo(tmp_path, judge_dir):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["Say hi.", "Name a colour.", "Count."] * 4))
    out = tmp_path / "grpo"
    rlhf(["train", "grpo", *TINY, f"data.path={prompts}", "data.prompt_field=prompt", "data.prompt_template=null",
          "data.reward_fields=[]",
          "data.max_length=64", "grpo.max_new_tokens=6", "grpo.prompts_per_step=2", "grpo.num_generations=3",
          "train.micro_batch_size=6", "train.max_steps=2", f"reward.functions=[{{name: judge, path: {judge_dir}}}]",
          f"output_dir={out}"])
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(1.0 <= r["reward/judge"] <= 10.0 and r["time/scoring"] > 0 for r in rows)


@pytest.mark.e2e
def test_bad_constitution_and_judge_dirs_give_one_line_errors(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("principles:\n  - critique_request: a\n    revision_request: b\n")
    for arg, expected in ((f"rlaif.constitution={bad}", f"{bad}: principles[0]: missing 'comparison_question'"),
                          (f"judge.path={tmp_path / 'nope'}", "judge.path="),
                          ("rlaif.phases=al", "rlaif.phases=al: must be one of sl, preferences, both"),
                          ("rlaif.num_responses=1", "must be >= 2")):
        proc = rlhf(["train", "rlaif", *FAST, arg, f"output_dir={tmp_path / 'o'}", "overwrite=true"], check=False)
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.strip().splitlines()
        assert err[-1].startswith("error: ") and expected in err[-1], proc.stderr
        assert "Traceback" not in proc.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    proc = rlhf(["train", "rlaif", *FAST, "data.limit=2", f"judge.path={broken}", f"output_dir={tmp_path / 'b'}"],
                check=False)
    assert proc.returncode == 2 and "cannot load a causal LM judge" in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_smoke_pipeline_script(tmp_path):
    env = {**os.environ, "SMOKE": "1", "OUT": str(tmp_path / "runs"),
           "RLHF": f"{sys.executable} -m rlhf_cli.cli.app", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(["bash", str(REPO / "recipes" / "rlaif.sh"), "seed=3"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for stage in ("sft", "rlaif", "dpo"):
        assert (tmp_path / "runs" / stage / "manifest.json").exists(), stage
        assert "\nseed: 3\n" in (tmp_path / "runs" / stage / "config.yaml").read_text()
    assert (tmp_path / "runs" / "dpo" / "final" / "model.safetensors").exists()


@pytest.mark.e2e
def test_interrupted_in_every_phase_resumes_to_the_same_files_and_weights(tmp_path):
    """SIGTERM in the CAI-SL phase, in the preference phase and in the rlaif.then stage, each followed by a
    rerun of the same command: the run continues from what it saved (main refused the rerun as finished or
    started over) and ends with the files and weights of an uninterrupted run."""
    from safetensors.torch import load_file

    from helpers import interrupt_at

    args = ["train", "rlaif", *FAST, "data.limit=6", "rlaif.num_responses=3", "rlaif.chunk_prompts=2",
            "rlaif.then=dpo", "rlaif.then_overrides=['train.max_steps=3','data.eval_fraction=0',"
            "'train.micro_batch_size=2','train.save_every=0']"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    rlhf([*args, f"output_dir={full}"])
    # 6 prompts in chunks of 2: stop checks 1-3 are the SL chunks, 4-6 the preference chunks, 7- the DPO steps
    interrupt_at(args, cut, 2)
    assert len(list((cut / "rlaif_chunks").glob("sl.*"))) == 2 and not (cut / "sl_data.jsonl").exists()
    assert not (cut / "manifest.json").exists()
    interrupt_at(args, cut, 5)
    assert len(list((cut / "rlaif_chunks").glob("preferences.*"))) == 2
    interrupt_at(args, cut, 8)
    assert (cut / "dpo" / "checkpoints" / "step-2").is_dir() and (cut / "preferences.jsonl").exists()
    assert not (cut / "manifest.json").exists() and not (cut / "dpo" / "manifest.json").exists()
    done = rlhf([*args, f"output_dir={cut}"])
    assert "RLAIF phases already finished" in done.stdout and "Resumed from" in done.stdout
    for name in ("sl_data.jsonl", "sl_chains.jsonl", "preferences.jsonl"):
        assert (cut / name).read_text() == (full / name).read_text(), name
    a, b = (load_file(str(d / "dpo" / "final" / "model.safetensors")) for d in (full, cut))
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0)
    la = {r["step"]: r["loss"] for r in metrics(full / "dpo") if "loss" in r}
    lb = {r["step"]: r["loss"] for r in metrics(cut / "dpo") if "loss" in r}
    assert sorted(lb) == [1, 2, 3] and all(lb[s] == pytest.approx(la[s], rel=1e-5) for s in la)
    m = json.loads((cut / "manifest.json").read_text())["metrics"]
    assert m["then"]["stage"] == "dpo" and m["pairs_kept"] == len(lines(cut / "preferences.jsonl"))
    assert not list((cut / "rlaif_chunks").glob("*.chunk*"))  # merged, then dropped
