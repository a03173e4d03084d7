"""Compose a stage config: packaged defaults -> recipe YAML (``conf=``) -> command-line overrides.

Group choices (``model=tiny``, ``engine=zero3``, ``data=...``) go through Hydra's compose API over the
packaged ``conf/`` tree, whether they come from the recipe (``engine: zero3``) or the command line.
Recipe values are then merged, command-line value overrides (Hydra syntax) applied last, and the
result is validated against the stage's dataclass schema. Every failure raises ``ConfigError`` with one
line naming the file / key (and the closest valid key for a typo).
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, List, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from rlhf_cli.config.stages import STAGES
from rlhf_cli.errors import ConfigError
from rlhf_cli.resources import conf_dir  # noqa: F401  (re-exported)
from rlhf_cli.text import closest  # noqa: F401  (re-exported: config's one-line errors)

GROUPS = ("model", "engine", "data")
# Fields holding filesystem paths: made absolute at compose time so workers (maybe in another cwd)
# and later reruns read the same files. 'builtin:' paths stay symbolic.
PATH_KEYS = ("output_dir", "model.path", "model.tiny.tokenizer", "data.path", "data.eval_path", "rm.path", "ref.path",
             "critic.path",
             "ppo.ptx_data", "judge.path", "rlaif.then_conf")
# Of those, the ones that are written or are our own files: never a Hub ID (``runs/sft-...`` has the ID's
# shape before ``runs/`` exists).
LOCAL_ONLY_KEYS = ("output_dir", "rlaif.then_conf")


def group_options(group: str) -> List[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def _all_keys(cfg: Any, prefix: str = "") -> List[str]:
    keys = []
    if isinstance(cfg, DictConfig):
        for k in cfg.keys():
            full = f"{prefix}{k}"
            keys.append(full)
            keys.extend(_all_keys(cfg._get_node(k), full + "."))
    return keys


def _load_recipe(recipe: str) -> DictConfig:
    path = Path(recipe)
    if not path.is_file():
        raise ConfigError(f"conf={recipe}: file not found")
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # yaml errors carry line numbers in their message
        msg = " ".join(str(e).split())
        raise ConfigError(f"{recipe}: invalid YAML: {msg}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{recipe}: a recipe must be a YAML mapping of config keys")
    return loaded


def _split_overrides(overrides: Sequence[str]):
    """Parse Hydra-syntax overrides; return (group choice strings, value overrides)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    groups, values = [], []
    parser = OverridesParser.create()
    for text in overrides:
        try:
            (ov,) = parser.parse_overrides([text])
        except HydraException as e:
            raise ConfigError(f"bad override '{text}': {' '.join(str(e).split())}") from None
        if ov.key_or_group in GROUPS and isinstance(ov.value(), str) and not ov.is_add():
            groups.append(text)
        else:
            values.append(ov)
    return groups, values


def _hydra_compose(stage: str, group_overrides: List[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        try:
            return hydra_compose(config_name=f"stage/{stage}", overrides=group_overrides)
        except MissingConfigException as e:
            for ov in group_overrides:
                group, _, choice = ov.partition("=")
                if choice not in group_options(group):
                    raise ConfigError(
                        f"{group}={choice}: no such {group} config{closest(choice, group_options(group))}; "
                        f"choices: {', '.join(group_options(group))}"
                    ) from None
            raise ConfigError(" ".join(str(e).split())) from None
        except HydraException as e:
            raise ConfigError(" ".join(str(e).split())) from None


def _apply_value_overrides(cfg: DictConfig, overrides: list) -> None:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import HydraException

    for ov in overrides:
        key = ov.key_or_group
        try:
            ConfigLoaderImpl._apply_overrides_to_config([ov], cfg)
        except (HydraException, OmegaConfBaseException) as e:
            if OmegaConf.select(cfg, key, default="__absent__") == "__absent__" and not ov.is_add():
                raise ConfigError(f"unknown key '{key}'{closest(key, _all_keys(cfg))}") from None
            cause = e.__cause__ or e
            raise ConfigError(f"{ov.input_line}: {_short(cause)}") from None


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0]


def _validate(stage: str, cfg: DictConfig, source: str, *more: DictConfig) -> DictConfig:
    """Merge cfg (and ``more`` on top) into the stage schema; errors name ``source``."""
    schema = OmegaConf.structured(STAGES[stage].schema)
    try:
        merged = OmegaConf.merge(schema, cfg, *more)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or _short(e)
        raise ConfigError(f"{source}: unknown key '{key}'{closest(str(key), _all_keys(schema))}") from None
    except ValidationError as e:
        key = getattr(e, "full_key", "?")
        raise ConfigError(f"{source}: key '{key}': {_short(e)}") from None
    _reject_unknown(merged, source)
    OmegaConf.set_struct(merged, True)
    return merged


def _reject_unknown(cfg: DictConfig, source: str, prefix: str = "") -> None:
    """Every key of a schema-typed section must be a field of its dataclass. (``+key=`` overrides are
    force-added by Hydra past struct mode and survive the merge; this is where they are caught.)"""
    import dataclasses

    schema = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(schema):
        fields = {f.name for f in dataclasses.fields(schema)}
        for key in cfg.keys():
            if key not in fields:
                full = f"{prefix}{key}"
                valid = [f"{prefix}{f}" for f in fields]
                raise ConfigError(f"{source}: unknown key '{full}'{closest(full, valid)} "
                                  f"(the schema has no such field; '+' cannot add one)")
    for key in cfg.keys():
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            _reject_unknown(node, source, f"{prefix}{key}.")


def _absolutize(cfg: DictConfig) -> None:
    from rlhf_cli.hub import is_hub_id

    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if not isinstance(value, str) or not value or value.startswith("builtin:"):
            continue
        if key in LOCAL_ONLY_KEYS or not is_hub_id(value):
            OmegaConf.update(cfg, key, str(Path(os.path.expanduser(value)).absolute()), merge=False)


def compose(stage: str, recipe: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Return the validated, fully resolved config for ``stage``."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage '{stage}'{closest(stage, STAGES)}; stages: {', '.join(STAGES)}")
    from rlhf_cli.config.aliases import rename_keys, rename_override

    recipe_cfg = _load_recipe(recipe) if recipe else OmegaConf.create({})
    source = recipe or "config"
    rename_keys(recipe_cfg, source)
    overrides = [rename_override(o) for o in overrides]
    recipe_groups = []
    for group in GROUPS:  # `engine: zero3` in a recipe is a group choice; a mapping is values.
        if isinstance(recipe_cfg.get(group), str):
            recipe_groups.append(f"{group}={recipe_cfg[group]}")
            del recipe_cfg[group]
    if "stage" in recipe_cfg and recipe_cfg.stage != stage:
        raise ConfigError(f"{source}: recipe is for stage '{recipe_cfg.stage}', not '{stage}'")
    cli_groups, cli_values = _split_overrides(overrides)

    base = _hydra_compose(stage, recipe_groups + cli_groups)
    cfg = _validate(stage, base, f"conf/stage/{stage}.yaml")
    cfg = _validate(stage, cfg, source, recipe_cfg)
    _apply_value_overrides(cfg, cli_values)
    cfg = _validate(stage, cfg, "command line")
    try:
        OmegaConf.resolve(cfg)
        missing = sorted(OmegaConf.missing_keys(cfg))
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {_short(e)}") from None
    if missing:
        raise ConfigError(f"missing required key '{missing[0]}' (set it in the recipe or as {missing[0]}=...)")
    if cfg.output_dir is None:
        cfg.output_dir = f"runs/{stage}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    from rlhf_cli.config.checks import check_config
    from rlhf_cli.config.derive import apply_derivations

    apply_derivations(cfg)  # before the checks, so derived values are validated too
    check_config(cfg)
    _absolutize(cfg)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def load_resolved(path: str | Path) -> DictConfig:
    """Read a config.yaml written by compose() (what every worker does) and re-validate it."""
    raw = OmegaConf.load(path)
    if not isinstance(raw, DictConfig) or "stage" not in raw:
        raise ConfigError(f"{path}: not an rlhf-cli config")
    if raw.stage not in STAGES:
        raise ConfigError(f"{path}: unknown stage '{raw.stage}'")
    from rlhf_cli.config.aliases import rename_keys

    rename_keys(raw, str(path), warn=lambda *_: None)  # a run saved before a rename resumes
    return _validate(str(raw.stage), raw, str(path))


def as_plain(cfg: Any) -> Any:
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
