"""The frozen reference policy of every stage that has one (ppo, grpo, dpo family): one decision, one
place.

- ``ref.path`` set: that model, frozen (ZeRO-3 sharded under engine=zero3 with several processes, or kept
  in CPU memory with ``ref.offload``), whatever else is on, LoRA included;
- LoRA without ``ref.path``: the policy itself with its adapter disabled (the starting model, no second
  copy in memory);
- otherwise: a frozen copy of the starting policy (``model.*``).
"""
from __future__ import annotations

from typing import Optional

from rlhf_cli.models.loading import load_reference
from rlhf_cli.models.lora import DisabledAdapterReference, lora_enabled


def reference_is_base(cfg) -> bool:
    """True when the reference is the policy with its LoRA adapter disabled (LoRA and no ref.path)."""
    return lora_enabled(cfg.model.lora) and not cfg.ref.path


def describe(cfg) -> str:
    return f"ref.path={cfg.ref.path}" if cfg.ref.path else "a frozen copy of the starting policy"


class Reference:
    """Built in two steps because the disabled-adapter reference needs the policy's engine, while a
    separate model is best prepared before it (ZeRO-3 partitions it first): ``Reference(ctx, tok)`` loads
    a separate model now (when one is needed), ``bind(policy)`` returns the module to run forward."""

    def __init__(self, ctx, tokenizer, needed: bool = True):
        cfg = ctx.cfg
        self.ctx, self.needed = ctx, needed
        self.base = needed and reference_is_base(cfg)
        self.model = None
        if needed and not self.base:
            self.model = ctx.strategy.prepare_frozen(load_reference(cfg, tokenizer), offload=cfg.ref.offload)
            ctx.log(f"Reference model loaded: {describe(cfg)}")

    def bind(self, policy) -> Optional[object]:
        """The reference module (None when the stage needs none)."""
        if self.base:
            self.ctx.log("Reference = the policy with its LoRA adapter disabled (no second copy)")
            return DisabledAdapterReference(policy)
        return self.model
