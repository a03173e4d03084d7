"""A run dir is untrusted input: a checkpoint file replaced by a pickle that runs code when unpickled must not
run on resume; the run fails with one line naming the file (exit code 2) instead."""
import json
import os
import shutil

import pytest
import torch

from helpers import TINY, rlhf

pytestmark = pytest.mark.e2e
ARGS = ["train", "sft", *TINY, "data.limit=32", "train.micro_batch_size=2",
        "train.max_steps=4", "train.save_every=2", "train.eval_every=0"]


class Payload:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A real SFT run dir with checkpoints/step-2, made resumable again by removing its final outputs."""
    out = tmp_path_factory.mktemp("sft") / "run"
    rlhf([*ARGS, f"output_dir={out}"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2"]
    shutil.rmtree(out / "final")
    (out / "manifest.json").unlink()
    return out


def test_payload_is_live(tmp_path):
    """The payload does run code under a plain unpickling load (so the tests below can fail)."""
    marker = tmp_path / "pwned"
    torch.save(Payload(marker), tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("victim", ["policy/ds/mp_rank_00_model_states.pt",
                                    "policy/ds/zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                    "rng-rank0.pt"])
def test_malicious_checkpoint_file_is_refused_not_run(checkpointed, tmp_path, victim):
    out = tmp_path / "run"
    shutil.copytree(checkpointed, out)
    path = out / "checkpoints" / "step-2" / victim
    assert path.is_file()
    marker = tmp_path / "pwned"
    torch.save(Payload(marker), path)
    proc = rlhf([*ARGS, f"output_dir={out}"], check=False)
    assert not marker.exists(), "resuming executed code from the run dir"
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (out / "final").exists() and not (out / "checkpoints" / "step-4").exists()


def test_malicious_dpo_reference_cache_is_never_unpickled(tmp_path):
    """output_dir/ref_logps.json (precomputed reference log-probs, reused by a rerun) is plain JSON: a
    pickle in its place is an unreadable cache, rebuilt, and never executed."""
    from prefdata import pairs, write_jsonl

    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(16))
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("stage: dpo\n")  # an earlier attempt that stopped after precomputing
    marker = tmp_path / "pwned"
    torch.save(Payload(marker), out / "ref_logps.json")
    proc = rlhf(["train", "dpo", *TINY, "data.max_length=64", "data.template=plain", "train.micro_batch_size=4",
                 "train.max_steps=1", f"data.path={data}", f"output_dir={out}", "overwrite=false"], check=False)
    assert not marker.exists(), "loading the reference cache executed code from the run dir"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stale or unreadable, recomputing" in proc.stdout
    json.loads((out / "ref_logps.json").read_text())
