"""`rlhf quickstart`: the README's first command — a real multi-process SFT of the embedded model."""
from __future__ import annotations

from typing import Sequence

PROMPT = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
          "How many clips did Natalia sell altogether in April and May?")
# Small enough for ~3 minutes of training on a 2-core CPU; a real run uses recipes/sft_example.yaml.
DEFAULTS = ["model=smollm2-135m", "engine=zero2", "data.max_length=256", "train.max_steps=12",
            "train.micro_batch_size=1", "train.grad_accum=2", "optim.lr=3e-5", "optim.warmup_steps=2",
            "train.eval_every=6", "train.eval_max_batches=4", "train.save_every=6", "output_dir=runs/quickstart"]


def run_quickstart(words: Sequence[str], nproc: int, debug: bool) -> int:
    from pathlib import Path

    from rich.console import Console

    from rlhf_cli.cli.generate import chat_reply
    from rlhf_cli.cli.train import run_train
    from rlhf_cli.config.compose import compose
    from rlhf_cli.models.loading import load_for_generation

    console = Console()
    overrides = DEFAULTS + list(words)
    cfg = compose("sft", None, overrides)
    out = Path(cfg.output_dir)
    question = [{"role": "user", "content": PROMPT}]
    lm, tok = load_for_generation("smollm2-135m")
    console.print(f"[bold]Question:[/bold] {PROMPT}")
    console.print(f"[bold]Before SFT:[/bold] {chat_reply(lm, tok, question, 96)}")
    del lm
    if (out / "manifest.json").exists():
        overrides.append("overwrite=true")  # quickstart is a demo: rerunning it replaces its own run
    console.print(f"[bold]Training[/bold] SFT with {nproc} DeepSpeed processes -> {out}")
    code = run_train("sft", overrides, dry_run=False, nproc=nproc, hostfile=None, debug=debug)
    if code != 0:
        return code
    lm, tok = load_for_generation(str(out))
    console.print(f"[bold]After SFT:[/bold] {chat_reply(lm, tok, question, 96)}")
    console.print(f"Checkpoint: {out / 'final'}  (metrics: {out / 'metrics.jsonl'})")
    console.print(f"Try: rlhf generate model={out} prompt=\"...\"")
    return 0
