"""Config fields whose value names a registry entry: validated against the registry (one line with the
closest name on a typo) and shown with their valid names by ``rlhf config``.

Adding a loss / estimator / reward is one decorated function in its registry; this table is where a
config key is tied to a registry (once per key, not per entry).
"""
from __future__ import annotations

import importlib
from typing import Dict, List, Tuple

from omegaconf import DictConfig, OmegaConf

from rlhf_cli.errors import ConfigError
from rlhf_cli.text import closest

# config key -> "module:REGISTRY". A field of the mappings in a list is written "list_key[].field".
REGISTRY_FIELDS: Dict[str, str] = {
    "dpo.loss": "rlhf_cli.algos.preference:DPO_LOSSES",
    "rm.loss": "rlhf_cli.algos.reward_model:RM_LOSSES",
    "grpo.advantage": "rlhf_cli.algos.advantages:ADVANTAGES",
    "grpo.policy_loss": "rlhf_cli.algos.policy:POLICY_LOSSES",
    "ppo.policy_loss": "rlhf_cli.algos.policy:POLICY_LOSSES",
    "grpo.loss_agg": "rlhf_cli.algos.policy:LOSS_AGGREGATIONS",
    "grpo.kl_estimator": "rlhf_cli.algos.policy:KL_ESTIMATORS",
    "ppo.loss_agg": "rlhf_cli.algos.policy:LOSS_AGGREGATIONS",
    "ppo.kl_estimator": "rlhf_cli.algos.policy:KL_ESTIMATORS",
    "ppo.kl_controller": "rlhf_cli.algos.kl_control:KL_CONTROLLERS",
    "reward.functions[].name": "rlhf_cli.rewards.registry:REWARDS",
}
# Values accepted besides the registry's names: a prefix ending in ':' accepts anything after it.
EXTRA_VALUES: Dict[str, List[str]] = {"reward.functions[].name": ["python:"]}


def registry_for(key: str):
    module, _, name = REGISTRY_FIELDS[key].partition(":")
    importlib.import_module(module.rsplit(".", 1)[0])  # a package __init__ may register built-ins
    return getattr(importlib.import_module(module), name)


def valid_names(key: str) -> List[str]:
    return registry_for(key).names() + EXTRA_VALUES.get(key, [])


def _values(cfg: DictConfig, key: str) -> List[Tuple[str, object]]:
    """(display key, value) pairs for ``key`` in cfg (one per list item for 'list[].field')."""
    if "[]." in key:
        list_key, field = key.split("[].")
        items = OmegaConf.select(cfg, list_key, default=None) or []
        return [(f"{list_key}[{i}].{field}", item.get(field)) for i, item in enumerate(items)
                if hasattr(item, "get")]
    value = OmegaConf.select(cfg, key, default=None)
    return [] if value is None else [(key, value)]


def check_registry_fields(cfg: DictConfig) -> None:
    """Every registry-backed value names an entry; else one line with the valid names."""
    for key in REGISTRY_FIELDS:
        pairs = _values(cfg, key)
        if not pairs:
            continue
        names = valid_names(key)
        prefixes = [n for n in names if n.endswith(":")]
        for shown, value in pairs:
            if value in names or any(str(value).startswith(p) for p in prefixes):
                continue
            raise ConfigError(f"{shown}={value}: must be one of {', '.join(names)}{closest(str(value), names)}")


def annotate_choices(yaml_text: str) -> str:
    """Append '  # choices: ...' to the lines of registry-backed keys in YAML written by OmegaConf
    (block style: nested keys indented by 2, list items '- ' at their parent key's indent)."""
    stack: List[Tuple[float, str]] = []  # (indent, key) of the open mappings / list items
    out = []
    for line in yaml_text.splitlines():
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        if body.startswith("- "):
            while stack and stack[-1][0] > indent:
                stack.pop()
            stack.append((indent + 0.5, "[]"))  # fields of this item are indented past it
            body = body[2:]
        else:
            while stack and stack[-1][0] >= indent:
                stack.pop()
        key, sep, value = body.partition(":")
        note = ""
        if sep:
            path = ".".join(k for _, k in stack).replace(".[]", "[]")
            full = f"{path}.{key}" if path else key
            if value.strip() == "":
                stack.append((indent, key))
            elif full in REGISTRY_FIELDS:
                note = f"  # choices: {', '.join(valid_names(full))}"
        out.append(line + note)
    return "\n".join(out) + ("\n" if yaml_text.endswith("\n") else "")
