"""Helpers for end-to-end tests: run the real `rlhf` CLI in a subprocess and read what it wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parent.parent
# Tiny-model settings that keep one optimizer step well under a second on 2 CPU cores.
TINY = ["model=tiny", "data.max_length=128", "log.progress=false", "optim.warmup_steps=1"]
# A verifiable reward a random tiny model learns in tens of steps (grpo and ppo e2e tests).
LOWERCASE_REWARD = (f'reward.functions=[{{name: "python:{REPO}/tests/fixtures/grpo/rewards.py:lowercase_share", '
                    'alias: lower}]')


def rlhf(args: Sequence[str], timeout: int = 600, env: Dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m rlhf_cli.cli.app ARGS` from the repo root; fail with its output if check and rc != 0."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "rlhf_cli.cli.app", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"rlhf {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def metrics(out: Path) -> List[dict]:
    return [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines() if x.strip()]


def train_losses(out: Path, key: str = "loss") -> Dict[int, float]:
    return {r["step"]: r[key] for r in metrics(out) if key in r}


PAUSE_HOOK = REPO / "tests" / "fixtures" / "pause"


def hold_at(args: Sequence[str], out: Path, stop_check: int, env: Dict[str, str] | None = None) -> subprocess.Popen:
    """Start `rlhf ARGS output_dir=OUT` and return it once it is held at its ``stop_check``-th stop check
    (after step N of a training loop, after chunk N of RLAIF; see tests/fixtures/pause/sitecustomize.py):
    a signal sent now always lands at that point, however fast the run is. The test waits for the run to
    get there (a condition), never for a time."""
    import time

    marker = out.parent / f".{out.name}.paused"
    marker.unlink(missing_ok=True)
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "RLHF_TEST_PAUSE_AT": str(stop_check),
           "RLHF_TEST_PAUSE_MARKER": str(marker),
           "PYTHONPATH": os.pathsep.join([str(PAUSE_HOOK), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_cli.cli.app", *args, f"output_dir={out}"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        proc.kill()
        stdout, err = proc.communicate()
        raise AssertionError(f"the run ended (rc {proc.returncode}) before stop check {stop_check}:\n"
                             f"{stdout[-2000:]}\n{err[-2000:]}")
    marker.unlink()
    return proc


def interrupt_at(args: Sequence[str], out: Path, stop_check: int,
                 env: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``hold_at``, then SIGTERM (as a scheduler would); checks the run saved and exited 130."""
    import signal

    proc = hold_at(args, out, stop_check, env)
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, f"rc {proc.returncode}:\n{stdout[-2000:]}\n{err[-2000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, err)


def interrupted_then_resumed(args: Sequence[str], out: Path, after_steps: int = 3) -> None:
    """SIGTERM `rlhf ARGS output_dir=OUT` right after its step ``after_steps`` (``interrupt_at``), check it
    saved a checkpoint and wrote no final/, then rerun the same command to resume to the end."""
    interrupt_at(args, out, after_steps)
    assert (out / "checkpoints" / f"step-{after_steps}").is_dir(), "no checkpoint written at the SIGTERM"
    assert not (out / "final").exists()
    rlhf([*args, f"output_dir={out}"])


SCRIPTS = REPO / "tests" / "e2e" / "scripts"


def run_script(script: str, args: Sequence[str], nproc: int = 1, timeout: int = 600,
               env: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run tests/e2e/scripts/SCRIPT with ARGS: as one plain process (nproc=1), or as ``nproc`` processes under
    DeepSpeed's per-node launcher (gloo on CPU), the way `rlhf train --nproc N` launches workers on one node.
    Fails with the output when the exit code is not 0."""
    from rlhf_cli.engine.launch import free_port, launch_command

    cmd = [sys.executable, str(SCRIPTS / script), *args]
    if nproc > 1:  # rlhf train's own command, with the script in place of `--module rlhf_cli.worker CONFIG`
        launcher = launch_command(Path("CONFIG"), nproc, None, free_port())
        assert launcher[-2:] == ["rlhf_cli.worker", "CONFIG"] and "--module" in launcher, launcher
        cmd = [a for a in launcher[:-2] if a != "--module"] + [str(SCRIPTS / script), *args]
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads, **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def save_tiny_judge(tokenizer, out: Path, seed: int) -> Path:
    """A tiny random judge LLM with strong (but arbitrary) preferences, saved as a plain HF dir: the label
    logits differ a lot because the LM head is scaled up."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
