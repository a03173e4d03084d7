"""What every stage runner shares: run context, metrics log, progress bar, stop signals, export, manifest."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from rlhf_cli.engine.checkpoints import is_disk_full, list_checkpoints
from rlhf_cli.errors import RunDirError
from rlhf_cli.output_files import write_output

if TYPE_CHECKING:
    from rlhf_cli.engine.strategy import Strategy


class Interrupted(Exception):
    """Raised after a checkpoint was saved because SIGINT/SIGTERM arrived."""


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checks it (collectively) after each step, saves, and stops."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.requested = True


class MetricsLog:
    """metrics.jsonl on rank 0, and the trackers of ``log.trackers`` (``training/trackers.py``)."""

    def __init__(self, cfg, out: Path, enabled: bool):
        from rlhf_cli.training.trackers import Trackers

        self.enabled = enabled
        self.file = open(out / "metrics.jsonl", "a") if enabled else None
        self.trackers = Trackers(cfg, out, enabled)

    def write(self, step: int, metrics: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        self.trackers.log(step, metrics)

    def truncate_after(self, step: int) -> None:
        """On resume from ``step``: drop lines logged after that checkpoint (they will be logged again)."""
        if not self.enabled:
            return
        self.file.close()
        path = Path(self.file.name)
        kept = []
        for ln in path.read_text(errors="replace").splitlines():
            try:
                if json.loads(ln).get("step", 0) <= step:
                    kept.append(ln)
            except (ValueError, AttributeError):  # a torn line from a killed run
                continue
        write_output(path, "".join(ln + "\n" for ln in kept))
        self.file = open(path, "a")

    def close(self) -> None:
        if self.file:
            self.file.close()
        self.trackers.close()


class Progress:
    """rich progress bar (rank 0, TTY) or a plain line every few seconds (logs, CI)."""

    def __init__(self, enabled: bool, total: int, start: int, desc: str):
        self.enabled, self.total, self.last_print = enabled, total, 0.0
        self.bar = None
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(),
                                    TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                                    TimeRemainingColumn())
            self.task = self.bar.add_task(desc, total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, info: str) -> None:
        if not self.enabled:
            return
        if self.bar:
            self.bar.update(self.task, completed=step, info=info)
        elif time.time() - self.last_print > 5 or step == self.total:
            self.last_print = time.time()
            print(f"step {step}/{self.total} {info}", flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


@dataclass
class RunContext:
    cfg: Any
    strategy: "Strategy"
    out: Path = field(init=False)
    metrics: MetricsLog = field(init=False)
    stop: StopFlag = field(init=False)
    # Model dirs this run exported (final/, PPO's critic/): the manifest hashes every file in each.
    exported: List[str] = field(init=False, default_factory=list)

    def __post_init__(self):
        self.out = Path(self.cfg.output_dir)
        self.metrics = MetricsLog(self.cfg, self.out, self.strategy.is_main)
        self.stop = StopFlag()

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    def log(self, msg: str) -> None:
        if self.strategy.is_main:
            print(msg, flush=True)

    def latest_checkpoint(self, required: bool = True) -> Optional[Path]:
        """The checkpoint to resume from (None: start fresh). ``required=False``: the newest one, whatever
        ``resume`` says."""
        steps = list_checkpoints(self.ckpt_root)
        if not required:
            return self.ckpt_root / f"step-{steps[-1]}" if steps else None
        if not steps or self.cfg.resume == "false":
            if self.cfg.resume == "true":
                raise RunDirError(f"resume=true but {self.ckpt_root} has no checkpoint")
            return None
        return self.ckpt_root / f"step-{steps[-1]}"

    def resume(self) -> Optional[Dict[str, Any]]:
        """Load the newest checkpoint (every train engine, RNG) if resuming; drop metrics logged after it.
        Returns its trainer state ({"step": N, ...}) or None for a fresh start. Call after every
        strategy.prepare()."""
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            return None
        state = self.strategy.load_checkpoint(ckpt)
        self.metrics.truncate_after(state["step"])
        self.log(f"Resumed from {ckpt} (step {state['step']}/{state.get('total_steps', '?')})")
        return state

    def should_stop(self) -> bool:
        """True on every rank once any rank got SIGINT/SIGTERM (one tiny collective)."""
        return self.strategy.all_reduce([float(self.stop.requested)], "max")[0] > 0


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_rev() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except Exception:
        return None


def export_final(ctx: RunContext, engine, tokenizer, extra_files: Optional[Dict[str, str]] = None,
                 subdir: str = "final") -> Path:
    """Gather a train engine's weights (collective under ZeRO-3) and write ``subdir`` (final/) as a plain
    HF dir on rank 0."""
    from rlhf_cli.models.loading import save_hf_model

    state_dict = engine.consolidated_state_dict()
    final = ctx.out / subdir
    if ctx.strategy.is_main:
        from rlhf_cli.models.lora import export_lora, is_lora

        try:
            if is_lora(engine.module):  # adapter files + (model.lora.merge) the merged plain model
                export_lora(engine.module, tokenizer, final, ctx.cfg.model.lora.merge, state_dict)
            else:
                save_hf_model(engine.module, state_dict, tokenizer, final)
        except Exception as e:
            if not is_disk_full(e):
                raise
            import shutil

            shutil.rmtree(final.parent / f".{final.name}.tmp", ignore_errors=True)
            last = ctx.latest_checkpoint(required=False)
            keep = f"{last} is intact; free space and rerun to resume from it" if last else "no checkpoint was written"
            free = shutil.disk_usage(ctx.out).free / 1e6
            raise RunDirError(f"{final}: out of disk space ({free:.0f} MB free) while exporting; {keep}") from None
        for name, text in (extra_files or {}).items():
            (final / name).write_text(text)
    if subdir not in ctx.exported:
        ctx.exported.append(subdir)
    ctx.strategy.barrier()
    return final


def dir_hashes(root: Path) -> Dict[str, str]:
    """sha256 of every file under ``root`` (recursively: a LoRA export's adapter/ too), keyed by its path
    relative to ``root``; {} when it does not exist."""
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def write_manifest(ctx: RunContext, summary: Dict[str, Any], data_paths: Dict[str, Optional[str]]) -> None:
    if not ctx.strategy.is_main:
        return
    from rlhf_cli import hub
    from rlhf_cli.config.compose import as_plain
    from rlhf_cli.data.readers import data_source

    cfg = ctx.cfg
    data = {}
    for key, p in data_paths.items():
        if p:
            split = cfg.data.get("eval_split") if key == "data.eval_path" and "data" in cfg else None
            resolved = data_source(p, cfg.get("data"), key=key, split=split)
            if isinstance(resolved, Path):
                data[key] = {"path": str(resolved), "sha256": sha256(resolved) if resolved.is_file() else None}
            else:  # a Hub dataset: the commit read is in "hub" below
                data[key] = {"hub": resolved.repo, "subset": resolved.subset, "split": resolved.split}
    final = ctx.out / "final"
    manifest: Dict[str, Any] = {
        "stage": cfg.stage,
        "base_model": cfg.model.path or cfg.model.name,
        "data": data,
        "metrics": summary,
        "precision": ctx.strategy.precision,
        "world_size": ctx.strategy.world_size,
        "git_rev": git_rev(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": as_plain(cfg),
        "files": dir_hashes(final),
        # every Hub model and dataset this run read: id, the revision asked, the commit it resolved to
        "hub": hub.resolved(),
        # every other exported model dir (PPO: critic/), hashed the same way
        "exports": {sub: dir_hashes(ctx.out / sub) for sub in ctx.exported if sub != "final"},
    }
    write_output(ctx.out / "manifest.json", json.dumps(manifest, indent=2))
