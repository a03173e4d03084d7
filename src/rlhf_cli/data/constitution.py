"""A constitution (Bai et al. 2022): principles (critique request, revision request, comparison question)
plus the judge prompt templates, read from YAML and validated with one-line errors naming the file and
the principle index / key.

``rlaif.constitution`` is a name under ``conf/constitution/`` (``default``) or a path to a YAML file.
A user's file replaces the principles entirely; a template it leaves out falls back to the packaged
default's (so a file of principles alone is enough).
"""
from __future__ import annotations

import hashlib
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from rlhf_cli.errors import ConfigError

PRINCIPLE_KEYS = ("critique_request", "revision_request", "comparison_question")
OPTIONAL_PRINCIPLE_KEYS = ("name",)
# template -> the format fields it may use
TEMPLATE_FIELDS: Dict[str, tuple] = {
    "critique": ("prompt", "response", "critique_request"),
    "revision": ("prompt", "response", "critique", "revision_request"),
    "compare": ("prompt", "question", "response_a", "response_b", "label_a", "label_b"),
    "compare_answer": ("label_a", "label_b"),
    "compare_cot": ("prompt", "question", "response_a", "response_b", "label_a", "label_b"),
    "compare_cot_answer": ("label_a", "label_b"),
    "score": ("prompt", "response"),
    "score_answer": (),
    "reference_question": (),
}


@dataclass
class Principle:
    index: int
    name: str
    critique_request: str
    revision_request: str
    comparison_question: str


@dataclass
class Constitution:
    path: Path
    sha256: str  # of the file's bytes: what the manifest records
    principles: List[Principle]
    templates: Dict[str, str]

    def render(self, template: str, **fields) -> str:
        return self.templates[template].format(**fields)

    def draw(self, seed: int, *keys: int) -> Principle:
        """A principle drawn uniformly, reproducibly for (seed, keys) whatever the process or batch."""
        rng = random.Random(hash_ints(seed, *keys))
        return self.principles[rng.randrange(len(self.principles))]


def hash_ints(*xs: int) -> int:
    h = hashlib.sha256(",".join(map(str, xs)).encode()).digest()
    return int.from_bytes(h[:8], "little")


def default_path() -> Path:
    from rlhf_cli.resources import conf_dir

    return conf_dir() / "constitution" / "default.yaml"


def resolve_constitution(value: str, key: str = "rlaif.constitution") -> Path:
    """A packaged name (``default``) or a YAML path; one-line ConfigError when neither exists."""
    from rlhf_cli.resources import conf_dir
    from rlhf_cli.text import closest

    p = Path(value).expanduser()
    if p.suffix in (".yaml", ".yml") or "/" in value:
        if not p.is_file():
            raise ConfigError(f"{key}={value}: file not found")
        return p
    packaged = sorted(x.stem for x in (conf_dir() / "constitution").glob("*.yaml"))
    if value not in packaged:
        raise ConfigError(f"{key}={value}: no such packaged constitution{closest(value, packaged)}; "
                          f"choices: {', '.join(packaged)} (or a path to a .yaml file)")
    return conf_dir() / "constitution" / f"{value}.yaml"


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a constitution must be a YAML mapping with a 'principles' list")
    return data


def check_template(path: Path, name: str, text) -> str:
    from rlhf_cli.text import closest

    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{path}: templates.{name} must be a non-empty string")
    allowed = TEMPLATE_FIELDS[name]
    try:
        used = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise ConfigError(f"{path}: templates.{name}: bad format string ({e}; write a literal brace as {{{{ }}}})") \
            from None
    for f in used:
        if f not in allowed:
            raise ConfigError(f"{path}: templates.{name} uses unknown field '{{{f}}}'{closest(f, allowed)}; "
                              f"fields: {', '.join(allowed) or 'none'}")
    return text


def _principles(path: Path, raw) -> List[Principle]:
    from rlhf_cli.text import closest

    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: 'principles' must be a non-empty list")
    out = []
    for i, p in enumerate(raw):
        where = f"{path}: principles[{i}]"
        if not isinstance(p, dict):
            raise ConfigError(f"{where}: must be a mapping with {', '.join(PRINCIPLE_KEYS)}")
        for k in p:
            if k not in PRINCIPLE_KEYS + OPTIONAL_PRINCIPLE_KEYS:
                raise ConfigError(f"{where}: unknown key '{k}'{closest(str(k), PRINCIPLE_KEYS + ('name',))}")
        for k in PRINCIPLE_KEYS:
            if k not in p:
                raise ConfigError(f"{where}: missing '{k}'")
            if not isinstance(p[k], str) or not p[k].strip():
                raise ConfigError(f"{where}.{k}: must be a non-empty string")
        name = p.get("name", f"principle_{i}")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.name: must be a non-empty string")
        out.append(Principle(i, name, *(p[k].strip() for k in PRINCIPLE_KEYS)))
    names = [x.name for x in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"{path}: principles[{names.index(dup, names.index(dup) + 1)}]: duplicate name '{dup}'")
    return out


def load_constitution(value: str = "default", key: str = "rlaif.constitution") -> Constitution:
    """Read, validate and complete a constitution (templates missing from a user file come from default)."""
    from rlhf_cli.text import closest

    path = resolve_constitution(value, key)
    data = _read_yaml(path)
    for k in data:
        if k not in ("principles", "templates"):
            raise ConfigError(f"{path}: unknown top-level key '{k}'{closest(str(k), ('principles', 'templates'))}")
    principles = _principles(path, data.get("principles"))
    given = data.get("templates") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"{path}: 'templates' must be a mapping of template name -> text")
    for k in given:
        if k not in TEMPLATE_FIELDS:
            raise ConfigError(f"{path}: unknown template 'templates.{k}'{closest(str(k), TEMPLATE_FIELDS)}; "
                              f"templates: {', '.join(TEMPLATE_FIELDS)}")
    defaults = {} if path.resolve() == default_path().resolve() else _read_yaml(default_path()).get("templates", {})
    templates = {}
    for name in TEMPLATE_FIELDS:
        if name in given:
            templates[name] = check_template(path, name, given[name])
        elif name in defaults:
            templates[name] = check_template(default_path(), name, defaults[name])
        else:
            raise ConfigError(f"{path}: missing template 'templates.{name}'")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Constitution(path.resolve(), digest, principles, templates)
