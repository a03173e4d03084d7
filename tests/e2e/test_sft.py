"""End-to-end SFT on a tiny random Llama through the real CLI, 1 and 2 DeepSpeed processes."""
import json

import pytest

from helpers import TINY, interrupted_then_resumed, metrics, rlhf, train_losses

pytestmark = pytest.mark.e2e
BASE = ["train", "sft", *TINY, "data.limit=200", "train.micro_batch_size=2", "optim.lr=3e-3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    rlhf([*BASE, "train.max_steps=16", "train.eval_every=8", f"output_dir={out}"])
    return out


def test_loss_falls_and_eval_runs(trained):
    losses = train_losses(trained)
    assert sorted(losses) == list(range(1, 17))
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (14, 15, 16)) / 3
    assert last < first - 0.5, losses
    evals = train_losses(trained, "eval/loss")
    assert set(evals) == {8, 16} and evals[16] < evals[8]
    assert all(0 <= r["padding_fraction"] < 0.5 for r in metrics(trained) if "padding_fraction" in r)


def test_final_is_a_plain_hf_model_that_generates(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = trained / "final"
    model = AutoModelForCausalLM.from_pretrained(str(final))
    tok = AutoTokenizer.from_pretrained(str(final))
    ids = tok("Hello", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["stage"] == "sft" and manifest["metrics"]["steps"] == 16
    assert set(manifest["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
    from rlhf_cli.training.runtime import sha256

    assert manifest["files"]["model.safetensors"] == sha256(final / "model.safetensors")
    proc = rlhf(["generate", f"model={trained}", "prompt=Hi", "max_new_tokens=4"])
    assert proc.stdout.strip() != "" or proc.returncode == 0


def test_finished_run_is_not_overwritten(trained):
    before = (trained / "final" / "model.safetensors").stat().st_mtime
    proc = rlhf([*BASE, "train.max_steps=16", f"output_dir={trained}"], check=False)
    assert proc.returncode == 2 and "holds a finished run; pass overwrite=true" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (trained / "final" / "model.safetensors").stat().st_mtime == before


def shm_segments():
    from rlhf_cli.engine.shm_segments import PREFIX, SHM_DIR

    return set(SHM_DIR.glob(f"{PREFIX}_*")) if SHM_DIR.is_dir() else set()


def test_two_processes_zero2_and_zero3_agree(tmp_path):
    runs = {}
    shm_before = shm_segments()
    for engine in ("zero2", "zero3"):
        out = tmp_path / engine
        rlhf([*BASE, "train.max_steps=4", f"engine={engine}", f"output_dir={out}", "--nproc", "2"])
        runs[engine] = train_losses(out)
        assert (out / "final" / "model.safetensors").exists()
    assert sorted(runs["zero2"]) == [1, 2, 3, 4]
    for s in runs["zero2"]:
        assert runs["zero3"][s] == pytest.approx(runs["zero2"][s], rel=1e-4)
    assert runs["zero2"][4] < runs["zero2"][1]
    # DeepSpeed's CPU shm all-reduce segments (69 MB per rank) are gone with the run, not left in /dev/shm
    assert shm_segments() <= shm_before


def test_grad_accumulation_2x2_equals_4x1(tmp_path):
    common = [*TINY, "data.limit=200", "optim.lr=1e-3", "train.max_steps=4"]
    a, b = tmp_path / "a", tmp_path / "b"
    rlhf(["train", "sft", *common, "train.micro_batch_size=2", "train.grad_accum=2", f"output_dir={a}"])
    rlhf(["train", "sft", *common, "train.micro_batch_size=4", "train.grad_accum=1", f"output_dir={b}"])
    la, lb = train_losses(a), train_losses(b)
    ga, gb = train_losses(a, "grad_norm"), train_losses(b, "grad_norm")
    for s in range(1, 5):
        assert la[s] == pytest.approx(lb[s], rel=1e-5)
        assert ga[s] == pytest.approx(gb[s], rel=1e-4)


def test_sigterm_checkpoints_and_resume_matches_uninterrupted(tmp_path):
    args = [*BASE, "train.max_steps=10", "train.save_every=0", "train.eval_every=0"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    rlhf([*args, f"output_dir={full}"])
    interrupted_then_resumed(args, cut, after_steps=3)
    a, b = train_losses(full), train_losses(cut)
    assert sorted(b) == list(range(1, 11))
    for s in range(1, 11):
        assert b[s] == pytest.approx(a[s], rel=1e-5), (s, a, b)


def test_dry_run_prints_config_and_launch_command(tmp_path):
    out = tmp_path / "dry"
    hosts = tmp_path / "hosts.txt"  # a missing --hostfile is an error (issue 9), so write one
    hosts.write_text("localhost slots=2\n")
    proc = rlhf(["train", "sft", *TINY, f"output_dir={out}", "--nproc", "2", "--hostfile", str(hosts), "--dry-run"])
    assert "stage: sft" in proc.stdout
    assert f"deepspeed.launcher.runner --hostfile {hosts} --num_gpus 2" in proc.stdout
    assert "--module --no_local_rank rlhf_cli.worker" in proc.stdout
    # one node, no hostfile: DeepSpeed's per-node launcher directly (the runner would only re-exec it)
    local = rlhf(["train", "sft", *TINY, f"output_dir={out}", "--nproc", "2", "--dry-run"]).stdout
    [cmd] = [ln for ln in local.splitlines() if ln.startswith("# launch: ")]
    assert "-m rlhf_cli.engine.ds_launch --world_info=" in cmd and "runner" not in cmd
    assert "--node_rank=0 --master_addr=127.0.0.1" in cmd and cmd.endswith(f"rlhf_cli.worker {out}/config.yaml")
    assert not out.exists()
