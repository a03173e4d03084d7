"""Entry point every training process runs: read output_dir/config.yaml, set up, run the stage."""
from __future__ import annotations

import os
import sys
import traceback


def check_same_config(strategy, config_path: str) -> None:
    """Every rank must run rank 0's config (multi-node: nodes other than 0 run their own composition of
    the same command); a mismatch stops all ranks with one line instead of a silent divergence or hang."""
    import hashlib
    from pathlib import Path

    from rlhf_cli.errors import ConfigError

    if strategy.world_size == 1:
        return
    mine = hashlib.sha256(Path(config_path).read_bytes()).hexdigest()
    differs = mine != strategy.broadcast_object(mine)
    if strategy.all_reduce([float(differs)], "max")[0] > 0:
        raise ConfigError(f"{config_path}: the config composed on this node differs from rank 0's "
                          "(run the same `rlhf train` command, recipe files and working directory on every node)")


def run_worker(config_path: str, debug: bool = False) -> int:
    """Run one process of a stage; returns an exit code, printing one-line errors unless debug."""
    from rlhf_cli.quiet import quiet_libraries

    debug = debug or os.environ.get("RLHF_DEBUG") == "1"
    quiet_libraries(debug)
    from rlhf_cli.errors import RlhfError
    from rlhf_cli.training.runtime import Interrupted

    rank = int(os.environ.get("RANK", "0"))
    prefix = "" if rank == 0 else f"[rank {rank}] "
    try:
        from rlhf_cli.config.compose import load_resolved
        from rlhf_cli.engine.strategy import Strategy
        from rlhf_cli.stages import get_runner
        from rlhf_cli.training.runtime import RunContext

        cfg = load_resolved(config_path)
        strategy = Strategy(cfg)
        strategy.setup_distributed()
        rank = strategy.rank
        check_same_config(strategy, config_path)
        strategy.seed_everything(cfg.seed)
        ctx = RunContext(cfg, strategy)
        try:
            get_runner(cfg.stage)(ctx)
        finally:
            ctx.metrics.close()
        return 0
    except Interrupted as e:
        if rank == 0:
            print(f"interrupted: {e}", file=sys.stderr, flush=True)
        return 130
    except RlhfError as e:
        if debug:
            traceback.print_exc()
        if rank == 0 or debug:
            print(f"{prefix}error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except Exception as e:  # unexpected: still one line, the traceback with --debug
        if debug:
            traceback.print_exc()
        msg = " ".join(str(e).split())[:500]
        print(f"{prefix}error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)",
              file=sys.stderr, flush=True)
        return 1


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    if len(args) != 1:
        print("usage: python -m rlhf_cli.worker OUTPUT_DIR/config.yaml", file=sys.stderr)
        sys.exit(2)
    code = run_worker(args[0])
    from rlhf_cli.engine.process_exit import exit_process

    exit_process(code)  # not sys.exit: the interpreter's teardown can abort a finished run (process_exit.py)


if __name__ == "__main__":
    main()
