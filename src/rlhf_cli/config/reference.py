"""The README's config reference, rendered from the schema (``make docs``; a test keeps README in sync).

One Markdown table for the fields every stage shares (RunConfig, the base data section and the frozen
reference ``ref``), then one per stage (``STAGES``) with the keys it adds and the shared keys whose default,
range or meaning it changes. Each row: the dotted key, the default (the stage's composed config with
``model=tiny``; the dataclass default for the shared table), what is allowed (``ranges`` metadata, or the
registry's names for registry-backed keys) and the meaning: the ``#`` comment lines directly above the
field in its dataclass (or in the parent dataclass it redeclares).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import json
import re
import textwrap
import tokenize
import typing
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from rlhf_cli.config.choices import EXTRA_VALUES, REGISTRY_FIELDS, valid_names
from rlhf_cli.config.ranges import range_of
from rlhf_cli.config.schema import MISSING, FrozenModelConfig, RunConfig
from rlhf_cli.config.stages import STAGES, DataConfig
from rlhf_cli.errors import ConfigError

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
MAX_MEANING = 160
# Shared sections besides RunConfig's own: every stage's data section extends DataConfig; the frozen
# reference of the stages that have one is a FrozenModelConfig.
SHARED_SECTIONS: Tuple[Tuple[str, type], ...] = (("data", DataConfig), ("ref", FrozenModelConfig))
# Keys whose per-stage composed value is not a stage's own default: the stage name, the timestamped
# output_dir, and model.* (composed with model=tiny so nothing needs downloading).
_NOT_STAGE_DEFAULTS = re.compile(r"^(stage|output_dir|model\..*)$")


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    default: str
    allowed: str
    meaning: str


# --- comments from the source --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _own_comments(cls: type) -> Dict[str, str]:
    """field name -> the '#' comment block directly above it in ``cls``'s own source (no blank line
    between). A whole-line parenthesised note ('(path: ...)') is about other fields and a '--- banner ---'
    heads a group; neither is this field's meaning."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: Dict[int, str] = {}
    code_lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments.setdefault(tok.start[0], tok.string.lstrip("#").strip())
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    tree = ast.parse(source)
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    out = {}
    for node in klass.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        lines: List[str] = []
        line = node.lineno - 1
        while line in comments and line not in code_lines:
            lines.insert(0, comments[line])
            line -= 1
        lines = [s for s in lines if not re.fullmatch(r"\(.*:.*\)|-{3}.*-{3}", s)]
        if lines:
            out[node.target.id] = " ".join(lines)
    return out


def field_comment(cls: type, name: str) -> str:
    """The comment of field ``name`` of dataclass ``cls``, from the nearest class in its MRO that has one."""
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass) and name in _own_comments(klass):
            return _own_comments(klass)[name]
    return ""


# '.' or ';' before a space, not after an abbreviation (e.g., i.e., et al., vs., sec., eq.) or in '...'.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bal)(?<!\bvs)(?<!\bsec)(?<!\beq)(?<!\.\.)[.;](?=\s)")


def shorten(text: str, limit: int = MAX_MEANING) -> str:
    """``text`` cut at the last sentence end within ``limit`` characters (else a word, with '…')."""
    if len(text) <= limit:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() <= limit]
    if ends and ends[-1] >= limit // 3:
        return text[: ends[-1]].rstrip(";") + ("" if text[ends[-1] - 1] == "." else " …")
    return text[:limit].rsplit(" ", 1)[0] + " …"


# --- walking the schema ----------------------------------------------------------------------------------


def schema_fields(schema: type, prefix: str = "") -> Iterator[Tuple[str, type, dataclasses.Field]]:
    """(dotted key, owning dataclass, field) for every leaf field of ``schema`` and its sections."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from schema_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", schema, f


def _select(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _value(v: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(v, (DictConfig, ListConfig)):
        return OmegaConf.to_container(v, resolve=True)
    return v


def fmt_default(v: Any) -> str:
    v = _value(v)
    if v == MISSING:
        return "(required)"
    if v is None:
        text = "null"
    elif isinstance(v, bool):
        text = "true" if v else "false"
    elif isinstance(v, float):
        text = f"{v:g}"
    elif isinstance(v, (list, dict)):
        text = json.dumps(v, separators=(", ", ": ")).replace('"', "")
        if isinstance(v, list) and all(isinstance(x, float) for x in v):
            text = "[" + ", ".join(f"{x:g}" for x in v) + "]"
    elif isinstance(v, str) and (v == "" or v != v.strip() or not v.isprintable()):
        text = json.dumps(v)
    else:
        text = str(v)
    return f"`{text}`"


def _allowed(key: str, f: dataclasses.Field) -> str:
    parts = []
    rng = range_of(f)
    if rng is not None:
        parts.append(rng.text())
    for reg_key in REGISTRY_FIELDS:
        list_key, _, item = reg_key.partition("[].")
        if reg_key == key:
            parts.append("one of " + ", ".join(f"`{n}`" for n in valid_names(reg_key)))
        elif item and list_key == key:
            names = [n for n in valid_names(reg_key) if n not in EXTRA_VALUES.get(reg_key, [])]
            extra = "".join(f", `{n}…`" for n in EXTRA_VALUES.get(reg_key, []))
            parts.append(f"item `{item}`: one of " + ", ".join(f"`{n}`" for n in names) + extra)
    return "; ".join(parts)


def _row(key: str, owner: type, f: dataclasses.Field, default: Any) -> Row:
    return Row(key, fmt_default(default), _allowed(key, f), shorten(field_comment(owner, f.name)))


def shared_rows() -> List[Row]:
    rows = [_row(k, owner, f, _select(RunConfig(), k)) for k, owner, f in schema_fields(RunConfig)]
    for name, section in SHARED_SECTIONS:
        inst = section(**{f.name: MISSING for f in dataclasses.fields(section) if f.default == MISSING})
        rows += [_row(f"{name}.{k}", owner, f, _select(inst, k)) for k, owner, f in schema_fields(section)]
    return rows


@functools.lru_cache(maxsize=None)
def _composed(stage: str):
    from rlhf_cli.config.compose import compose

    return compose(stage, None, ["model=tiny"])


def stage_rows(stage: str, shared: Dict[str, Row]) -> List[Row]:
    """Rows of the keys ``stage`` adds, and of the shared keys whose default, range or meaning it changes."""
    cfg = _composed(stage)
    schema = STAGES[stage].schema
    rows = []
    for key, owner, f in schema_fields(schema):
        value = _select(cfg, key)
        if isinstance(value, str) and value.startswith("/"):  # made absolute at compose time
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        row = _row(key, owner, f, value)
        base = shared.get(key)
        if base is None:
            rows.append(row)
        elif _NOT_STAGE_DEFAULTS.match(key):
            continue
        elif (row.default, row.allowed, row.meaning) != (base.default, base.allowed, base.meaning):
            rows.append(row)
    return rows


# --- Markdown ----------------------------------------------------------------------------------------------


def _cell(text: str, prose: bool = False) -> str:
    """A table cell: '|' escaped; in prose (not code spans) also '*' and a '<' that
    would open an HTML tag."""
    text = text.replace("|", "\\|").replace("\n", " ")
    if prose:
        parts = text.split("`")  # odd parts are code spans: left as written
        text = "`".join(p if i % 2 else re.sub(r"<(?=[A-Za-z/!])", "&lt;", p.replace("*", "\\*"))
                        for i, p in enumerate(parts))
    return text


def table(rows: Sequence[Row]) -> str:
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    lines += [f"| `{r.key}` | {_cell(r.default)} | {_cell(r.allowed, True)} | {_cell(r.meaning, True)} |"
              for r in rows]
    return "\n".join(lines)


def config_reference_markdown() -> str:
    """The generated reference (Markdown, without the marker lines)."""
    from rlhf_cli.config.compose import group_options

    shared = shared_rows()
    by_key = {r.key: r for r in shared}
    with_ref = ", ".join(s for s, info in STAGES.items() if "ref" in {f.name for f in dataclasses.fields(info.schema)})
    parts = [
        "_Generated from the config schema by `make docs` (`scripts/gen_config_reference.py`); edit the "
        "field comments in `src/rlhf_cli/config/`, not this table._",
        "### Shared by every stage",
        f"`data.*` below is the part of the data section every stage has; `ref.*` is the frozen reference of "
        f"the stages that have one ({with_ref}). Defaults here are the dataclass defaults; a stage's table "
        "lists the ones it changes. Groups pick a packaged preset: "
        + "; ".join(f"`{g}=` " + ", ".join(f"`{o}`" for o in group_options(g)) for g in ("model", "engine"))
        + ".",
        table(shared),
    ]
    for stage, info in STAGES.items():
        rows = stage_rows(stage, by_key)
        parts += [f"### `{stage}`", info.description, table(rows) if rows else "(no keys of its own)"]
    return "\n\n".join(parts) + "\n"


def readme_block(text: str, source: str = "README.md") -> str:
    """The text between the marker lines of ``text`` (without them)."""
    start, end = text.find(START + "\n"), text.find(END)
    if start < 0 or end < start:
        raise ConfigError(f"{source}: no '{START}' ... '{END}' block")
    return text[start + len(START) + 1: end].strip("\n") + "\n"


def replace_block(text: str, block: str, source: str = "README.md") -> str:
    readme_block(text, source)  # both markers present
    start, end = text.find(START + "\n"), text.find(END)
    return text[: start + len(START) + 1] + "\n" + block.strip("\n") + "\n\n" + text[end:]


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Render the config reference from the schema.")
    p.add_argument("--write", metavar="README", help="replace the block between the markers in this file")
    p.add_argument("--check", metavar="README", help="exit 1 if the block in this file is out of date")
    args = p.parse_args(argv)
    md = config_reference_markdown()
    if args.write:
        path = Path(args.write)
        path.write_text(replace_block(path.read_text(), md, args.write))
    elif args.check:
        if readme_block(Path(args.check).read_text(), args.check) != md:
            print(f"{args.check}: the config reference is out of date; run `make docs`")
            return 1
    else:
        print(md, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
