"""Stage runners. Each module exposes ``run(ctx: RunContext) -> summary dict``; the table is
``rlhf_cli.config.stages.STAGES``."""
import importlib


def get_runner(stage: str):
    from rlhf_cli.config.stages import STAGES

    return importlib.import_module(STAGES[stage].runner).run
