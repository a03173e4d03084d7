"""Config values derived from other values, in ONE place: applied by ``compose`` after validation, logged
by ``rlhf train``, and shown by ``rlhf config`` with the reason as a comment.

A stage schema may define ``derive(cfg) -> {key: (value, reason)}`` (pure: the same cfg gives the same
answer, so the annotation can recompute it).
"""
from __future__ import annotations

from typing import Dict, Tuple

from omegaconf import DictConfig, OmegaConf


def derivations(cfg: DictConfig) -> Dict[str, Tuple[object, str]]:
    from rlhf_cli.config.stages import STAGES

    out: Dict[str, Tuple[object, str]] = {}
    resume = str(cfg.resume).lower()  # YAML/Hydra read resume=true as a boolean
    if resume != cfg.resume:
        out["resume"] = (resume, "auto | true | false, lower-cased")
    fn = getattr(STAGES[cfg.stage].schema, "derive", None) if cfg.stage in STAGES else None
    out.update(fn(cfg) if fn else {})
    return out


def apply_derivations(cfg: DictConfig) -> Dict[str, Tuple[object, str]]:
    """Set every derived key on ``cfg``; returns what was derived."""
    derived = derivations(cfg)
    for key, (value, _) in derived.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return derived


def annotate_derived(yaml_text: str, cfg: DictConfig) -> str:
    """Append '  # derived: reason' to the derived keys' lines (top-level section.key form)."""
    derived = derivations(cfg)
    out, section = [], ""
    for line in yaml_text.splitlines():
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        key = body.split(":", 1)[0]
        if indent == 0:
            section = key
        full = key if indent == 0 else f"{section}.{key}"
        note = f"  # derived: {derived[full][1]}" if indent <= 2 and full in derived else ""
        out.append(line + note)
    return "\n".join(out) + ("\n" if yaml_text.endswith("\n") else "")
