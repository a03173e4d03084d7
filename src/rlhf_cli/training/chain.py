"""Run a further stage in the same command on data this run made (``rlaif.then=sft|rm|dpo``).

The next stage's config is composed as ``rlhf train STAGE`` would (its packaged defaults, then
``then_conf`` as its recipe, then overrides): ``data.path`` = the made file, the same policy
(``model=<preset>`` + ``model.path``), seed, precision and threads, ``output_dir = <this run>/<stage>``,
then the user's ``then_overrides``. Rank 0 prepares its output dir (config.yaml), every process builds a
Strategy for it (the process group is already up and is reused) and runs the stage's runner (handed in by
the calling stage: this room sits below stages/).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Sequence

from rlhf_cli.config.compose import compose, group_options, to_yaml


def next_stage_overrides(cfg, stage: str, data_file: Path) -> List[str]:
    """The overrides that make the next stage train this run's policy on ``data_file``, under this run."""
    ov = [f"data.path={data_file}", f"output_dir={Path(cfg.output_dir) / stage}", f"seed={cfg.seed}",
          f"precision={cfg.precision}", f"threads={cfg.threads}", f"log.progress={cfg.log.progress}",
          f"data.max_length={cfg.data.max_length}", f"overwrite={cfg.overwrite}"]
    if cfg.model.name in group_options("model"):
        ov.insert(0, f"model={cfg.model.name}")
    if cfg.model.path:
        ov.append(f"model.path={cfg.model.path}")
    return ov


def run_next_stage(ctx, stage: str, runner: Callable, data_file: Path, extra: Sequence[str] = (),
                   recipe=None) -> dict:
    """Compose ``stage`` on ``data_file`` and run ``runner`` on it in these processes; returns its summary
    (a finished next stage is not rerun: its manifest's metrics)."""
    from rlhf_cli.engine.strategy import Strategy
    from rlhf_cli.training.run_dir import prepare_output_dir
    from rlhf_cli.training.runtime import RunContext

    cfg = ctx.cfg
    sub = compose(stage, recipe, next_stage_overrides(cfg, stage, data_file) + list(extra))
    done = Path(sub.output_dir) / "manifest.json"
    if done.exists() and not sub.overwrite:  # finished before this run was interrupted: nothing left to do
        import json

        ctx.log(f"rlaif.then={stage}: {sub.output_dir} already finished")
        return json.loads(done.read_text())["metrics"]
    if ctx.strategy.is_main:
        prepare_output_dir(sub, to_yaml(sub))
    ctx.strategy.barrier()
    ctx.log(f"rlaif.then={stage}: training on {data_file} -> {sub.output_dir}")
    strategy = Strategy(sub)
    strategy.setup_distributed()  # reads the same RANK/WORLD_SIZE; the process group is reused
    strategy.seed_everything(sub.seed)
    sub_ctx = RunContext(sub, strategy)
    try:
        return runner(sub_ctx)
    finally:
        sub_ctx.metrics.close()
