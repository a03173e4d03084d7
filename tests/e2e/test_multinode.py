"""Multi-node without ssh: two `rlhf train --nnodes 2 --node-rank R` launches on this machine (two
simulated nodes meeting at 127.0.0.1 over gloo) train exactly as one node with two processes."""
import os
import subprocess
import sys

import pytest

from helpers import REPO, TINY, rlhf, train_losses

pytestmark = pytest.mark.e2e
BASE = ["train", "sft", *TINY, "data.limit=200", "train.micro_batch_size=2", "optim.lr=3e-3", "train.max_steps=4"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_equal_two_processes_on_one_node(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    rlhf([*BASE, f"output_dir={single}", "--nproc", "2"])
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PYTHONUNBUFFERED"] = "1"
    procs = [subprocess.Popen([sys.executable, "-m", "rlhf_cli.cli.app", *BASE, f"output_dir={multi}", "--nproc", "1",
                               "--nnodes", "2", "--node-rank", str(r), "--master-addr", "127.0.0.1",
                               "--master-port", str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (1, 0)]  # node 1 first: it must wait
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-3000:] + err[-3000:]
    a, b = train_losses(single), train_losses(multi)
    assert sorted(b) == [1, 2, 3, 4]
    for s in a:
        assert b[s] == pytest.approx(a[s], abs=1e-5)
    assert (multi / "final" / "model.safetensors").exists() and (multi / "config.yaml").exists()
    assert not list(multi.glob("*node1*")), "node 1 must write nothing into output_dir"


def test_dry_run_shows_each_nodes_command(tmp_path):
    out = tmp_path / "run"
    cmds = {}
    for r in (0, 1):
        proc = rlhf([*BASE, f"output_dir={out}", "--nproc", "2", "--nnodes", "2", "--node-rank", str(r),
                     "--master-addr", "10.1.2.3", "--master-port", "29611", "--dry-run"])
        cmds[r] = [ln for ln in proc.stdout.splitlines() if ln.startswith("# launch: ")][0]
    assert "rlhf_cli.engine.ds_launch" in cmds[0] and "--node_rank=0" in cmds[0] and "--node_rank=1" in cmds[1]
    for c in cmds.values():
        assert "--master_addr=10.1.2.3" in c and "--master_port=29611" in c
    assert f"{out}/config.yaml" in cmds[0] and "node1.config.yaml" in cmds[1]
    assert not out.exists(), "--dry-run writes nothing"


def test_slurm_variables_fill_the_node_flags(tmp_path):
    env = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "3", "SLURM_NTASKS": "3", "SLURM_NODEID": "2",
           "SLURM_JOB_NODELIST": "gpu[07-09]", "PATH": "/usr/bin:/bin"}  # no scontrol on PATH: the simple parse
    proc = rlhf(["train", "sft", *TINY, "--nproc", "4", "--dry-run"], env=env)
    assert "# node 2 of 3 (SLURM), 4 process(es) per node, master gpu07:29500" in proc.stdout
    launch = [ln for ln in proc.stdout.splitlines() if ln.startswith("# launch: ")][0]
    assert "--node_rank=2" in launch and "--master_addr=gpu07" in launch
    assert f"output_dir: {REPO}/runs/sft-slurm-4242" in proc.stdout


@pytest.mark.parametrize("flags, message", [
    (["--nnodes", "0"], "--nnodes=0: must be at least 1"),
    (["--nnodes", "2", "--node-rank", "2", "--master-addr", "h"], "--node-rank=2: must be in 0..1"),
    (["--nnodes", "2", "--node-rank", "1"], "--nnodes=2 needs --master-addr"),
    (["--nnodes", "2", "--node-rank", "0", "--master-addr", "h", "--hostfile", "hf"], "exclude each other"),
])
def test_bad_node_flags_are_one_line_errors(tmp_path, flags, message):
    proc = rlhf(["train", "sft", *TINY, f"output_dir={tmp_path}/r", *flags], check=False,
                env={"SLURM_NNODES": ""})
    assert proc.returncode != 0 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_multi_node_needs_a_shared_output_dir():
    proc = rlhf(["train", "sft", *TINY, "--nnodes", "2", "--node-rank", "0", "--master-addr", "h", "--dry-run"],
                check=False)
    assert proc.returncode != 0 and "a multi-node run needs output_dir=" in proc.stderr
