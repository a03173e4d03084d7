"""Trackers for real, offline: wandb (WANDB_MODE=offline: the run folder holds the metrics), mlflow (a local
file store read back with its client) and trackio (its local store), from one tiny SFT run; a resumed run
continues the same tracker runs; an unknown or missing tracker is one line before anything runs."""
import json

import pytest

from helpers import TINY, interrupt_at, metrics, rlhf

pytestmark = pytest.mark.e2e
SFT = ["train", "sft", *TINY, "data.limit=64", "train.micro_batch_size=2", "train.max_steps=4", "train.save_every=0",
       "log.trackers=[wandb,mlflow,trackio]", "log.project=rlhf-test", "log.run_name=tiny-sft"]


def tracker_env(tmp):
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "TRACKIO_DIR": str(tmp / "trackio"),
            "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp / "wandb-config")}


def mlflow_history(out, run_id, key):
    import os

    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the run's own file store (trackers.py)
    client = MlflowClient(tracking_uri=(out / "mlruns").absolute().as_uri())
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}, client.get_run(run_id)


def wandb_records(path):
    """The protobuf records of an offline run's ``.wandb`` file: its header, then LevelDB-log framing
    (32 KiB blocks; each chunk a 7-byte header: crc32, length, type 1 full / 2 first / 3 middle / 4 last).
    wandb 0.2x+ keeps the offline history only here (no wandb-summary.json until synced)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        buf += data[pos:pos + length]
        pos += length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def wandb_history(out, run_id):
    """{step: {metric: value}} over every offline folder of run ``run_id`` (a resume writes a new one), and
    the config keys it was given."""
    history, config = {}, {}
    for path in sorted((out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
                history[row["_step"]] = row
            elif kind == "run":  # the config given to wandb.init rides on the run record
                config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
    return history, config


def trackio_steps(tmp, project, run, key):
    import os

    os.environ["TRACKIO_DIR"] = str(tmp / "trackio")
    import importlib

    import trackio.sqlite_storage as st

    importlib.reload(st)
    logs = st.SQLiteStorage.get_logs(project, run)
    return {row["step"]: row[key] for row in logs if key in row}


def test_metrics_reach_every_tracker_and_a_resume_continues_the_same_runs(tmp_path):
    out = tmp_path / "run"
    env = tracker_env(tmp_path)
    interrupt_at(SFT, out, 2, env)  # SIGTERM after step 2; the same command then resumes to step 4
    first = json.loads((out / "trackers.json").read_text())
    rlhf([*SFT, f"output_dir={out}"], env=env)
    state = json.loads((out / "trackers.json").read_text())
    assert set(state) == {"wandb", "mlflow", "trackio"} and state == first  # the same tracker runs
    losses = {r["step"]: r["loss"] for r in metrics(out) if "loss" in r}
    assert sorted(losses) == [1, 2, 3, 4]
    # mlflow: the whole loss history in one run, its config attached
    history, run = mlflow_history(out, state["mlflow"], "loss")
    assert sorted(history) == [1, 2, 3, 4] and history[4] == pytest.approx(losses[4], rel=1e-5)
    assert run.data.params["stage"] == "sft" and run.info.run_name == "tiny-sft"
    # wandb offline: both halves under the one run id hold every step, the config attached
    assert len(list((out / "wandb").glob(f"offline-run-*-{state['wandb']}"))) == 2
    history, config = wandb_history(out, state["wandb"])
    assert sorted(history) == [1, 2, 3, 4] and config["stage"] == "sft" and config["output_dir"] == str(out)
    assert {s: history[s]["loss"] for s in history} == pytest.approx(losses, rel=1e-6)
    # trackio: its local store has every step
    steps = trackio_steps(tmp_path, "rlhf-test", state["trackio"], "loss")
    assert sorted(steps) == [1, 2, 3, 4] and steps[3] == pytest.approx(losses[3], rel=1e-5)


def test_unknown_and_missing_trackers_are_one_line(tmp_path, monkeypatch):
    bad = rlhf([*SFT[:-3], "log.trackers=[wandbb]", f"output_dir={tmp_path / 'a'}"], check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: log.trackers: unknown tracker 'wandbb' (did you mean 'wandb'?); choices: tensorboard, wandb, "
        "mlflow, trackio")
    assert not (tmp_path / "a").exists()
    import importlib.util

    from rlhf_cli.config.checks import check_trackers
    from rlhf_cli.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^log.trackers: mlflow is not installed: pip install 'rlhf-cli\[mlflow\]'$"):
        check_trackers(["wandb", "mlflow"])
