"""`make gpu-check` can only run on a CUDA machine, but what it runs is checked here: every run of its plan
composes (the same configs the GPU run uses), and without a GPU it says so in one line."""
import subprocess
import sys

from helpers import REPO


def test_the_plan_composes_and_covers_every_stage_and_engine():
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--plan", "--quick"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    labels = [ln.split(":")[0] for ln in p.stdout.splitlines() if ": rlhf train " in ln]
    assert {lab.split()[0] for lab in labels} == {"sft", "rm", "dpo", "grpo", "ppo", "rlaif"}
    assert {"sft zero3 x1", "grpo zero3 x1", "sft zero2 x2", "grpo zero2 x2", "sft fp16 zero2 x1"} <= set(labels)
    assert all("precision=bf16" in ln for ln in p.stdout.splitlines() if ": rlhf train " in ln and "fp16" not in ln)


def test_without_a_gpu_it_is_one_line():
    import torch

    if torch.cuda.is_available():
        return
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--quick"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert p.stderr.strip() == "error: gpu-check needs a CUDA GPU (torch.cuda.device_count() is 0)"
