"""Experiment trackers: ``log.trackers=[tensorboard, wandb, mlflow, trackio]`` (any subset), beside the
``metrics.jsonl`` every run writes. Rank 0 only; each tracker run gets the resolved config; ``log.project``
and ``log.run_name`` (default: the output dir's name) name it.

- tensorboard: event files under ``output_dir/tb`` (``pip install 'rlhf-cli[tensorboard]'``);
- wandb: ``wandb.init`` with the run's config (``WANDB_MODE=offline`` keeps it in ``output_dir/wandb``;
  ``pip install 'rlhf-cli[wandb]'``);
- mlflow: ``MLFLOW_TRACKING_URI`` (default a file store in ``output_dir/mlruns``), the config as a logged
  ``config.yaml`` artifact and its scalars as params (``pip install 'rlhf-cli[mlflow]'``);
- trackio: local-first (``TRACKIO_DIR``; ``pip install 'rlhf-cli[trackio]'``).

Each tracker's run id is kept in ``output_dir/trackers.json``, so a resumed run continues the same tracker
run. A tracker that is not installed is a one-line error naming its extra, before the run starts.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List

from rlhf_cli.output_files import write_output

STATE = "trackers.json"  # (the names and their checks: config/checks.py TRACKER_MODULES, check_trackers)


def _scalars(metrics: Dict[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def _flat(node, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = node
    return out


class Trackers:
    """The run's trackers on rank 0 (nothing elsewhere): ``log(step, metrics)``, ``close()``."""

    def __init__(self, cfg, out: Path, enabled: bool):
        self.out, self.active = Path(out), []
        names = list(cfg.log.get("trackers") or [])
        if cfg.log.get("tensorboard") and "tensorboard" not in names:
            names.insert(0, "tensorboard")  # log.tensorboard=true: the shorthand for it
        if not enabled or not names:
            return
        from rlhf_cli.config.compose import as_plain

        self.config = as_plain(cfg)
        self.project = cfg.log.get("project") or "rlhf-cli"
        self.name = cfg.log.get("run_name") or Path(cfg.output_dir).name
        self.state = self._read_state()
        for name in names:
            getattr(self, f"_open_{name}")()
        write_output(self.out / STATE, json.dumps(self.state, indent=1))

    def _read_state(self) -> Dict[str, str]:
        try:
            return dict(json.loads((self.out / STATE).read_text()))
        except (OSError, ValueError, TypeError):
            return {}

    # ---- one opener per tracker ------------------------------------------------------------------------
    def _open_tensorboard(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(self.out / "tb"))
        self.active.append(("tensorboard", lambda step, m: [tb.add_scalar(k, v, step) for k, v in m.items()],
                            tb.close))

    def _open_wandb(self) -> None:
        import wandb

        # First run: wandb makes the id (recorded below); a resume passes it back to continue that run.
        run = wandb.init(project=self.project, name=self.name, id=self.state.get("wandb"), resume="allow",
                         config=self.config,
                         dir=str(self.out), reinit="create_new")
        self.state["wandb"] = run.id
        self.active.append(("wandb", lambda step, m: run.log(m, step=step), run.finish))

    def _open_mlflow(self) -> None:
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # The run's own file store: mlflow 3 keeps it in maintenance mode behind this opt-out (a server
            # or sqlite:// store needs more than the mlflow-skinny extra; set MLFLOW_TRACKING_URI for one).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((self.out / "mlruns").absolute().as_uri())
        client_run = self.state.get("mlflow")
        if client_run is None:
            mlflow.set_experiment(self.project)
            run = mlflow.start_run(run_name=self.name)
            import yaml

            mlflow.log_text(yaml.safe_dump(self.config, sort_keys=False), "config.yaml")
            params = {k: str(v)[:250] for k, v in _flat(self.config).items() if v is not None}
            keys = sorted(params)
            for i in range(0, len(keys), 90):  # mlflow takes at most 100 params a call
                mlflow.log_params({k: params[k] for k in keys[i:i + 90]})
        else:
            run = mlflow.start_run(run_id=client_run)
        self.state["mlflow"] = run.info.run_id
        self.active.append(("mlflow", lambda step, m: mlflow.log_metrics(m, step=step), mlflow.end_run))

    def _open_trackio(self) -> None:
        import trackio

        name = self.state.get("trackio") or self.name
        trackio.init(project=self.project, name=name, config=self.config, resume="allow", embed=False)
        self.state["trackio"] = name
        self.active.append(("trackio", lambda step, m: trackio.log(m, step=step), trackio.finish))

    # ---- use ------------------------------------------------------------------------------------------
    def log(self, step: int, metrics: Dict[str, Any]) -> None:
        values = _scalars(metrics)
        for _, log, _ in self.active:
            log(step, values)

    def close(self) -> None:
        for _, _, close in self.active:
            close()
        self.active = []

    @property
    def names(self) -> List[str]:
        return [name for name, _, _ in self.active]
