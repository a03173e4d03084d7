"""Every `rlhf train` command the README and the recipes' usage comments show composes and validates as a
shell would pass it: split by the shell (an unquoted `[{name: model, path: runs/rm}]` is four words), then
the CLI's own argument split and compose. The only failures allowed are the files and run directories a
user brings (`runs/sft`, `feedback.jsonl`, `/models/judge`), and the README's deliberate typo example.
The README's `generate`, `chat`, `label`, `eval KIND`, `elo`, `report` and `bench` examples parse against
their commands' options."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from rlhf_cli.cli.args import split_args
from rlhf_cli.config.compose import compose
from rlhf_cli.config.stages import STAGES
from rlhf_cli.errors import ConfigError
from rlhf_cli.hub import is_hub_id

ROOT = Path(__file__).resolve().parents[2]
# `rlhf train` flags that take a value (dropped with it: they choose processes, not the config)
VALUE_FLAGS = {"--nproc", "--hostfile", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--gpu-mem"}
# Paths the commands name that the user makes or brings: earlier stages' run dirs, their own data files
# (../shared/data is the data beside this checkout, not shipped).
USER_PATH = re.compile(r"^(runs/|/models/|/shared/|\.\./shared/|my_|[\w-]+\.jsonl$)")
# Examples shown to demonstrate an error, with the error they show.
ERROR_EXAMPLES = {"optim.lrr=1e-5": "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"}


def shell_lines(text: str, comment_prefix: str = ""):
    """Command lines: backslash continuations joined, a trailing `# comment` dropped."""
    text = re.sub(r"\\\n\s*" + re.escape(comment_prefix), " ", text)
    for line in text.splitlines():
        line = line.strip()
        if comment_prefix:
            if not line.startswith(comment_prefix):
                continue
            line = line[len(comment_prefix):].strip()
        yield re.split(r"\s#\s", line)[0]


def shell_blocks(markdown: str):
    """The text of each fenced block that is shell (```bash, ```sh or no language), fence by fence: a
    ```json or ```python block is skipped whole, never half-read as the start of the next one."""
    lang, lines = None, []
    for line in markdown.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                if lang in ("", "bash", "sh"):
                    yield "\n".join(lines) + "\n"
                lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, "README.md: a code fence is never closed"


def readme_lines():
    return [ln for block in shell_blocks((ROOT / "README.md").read_text()) for ln in shell_lines(block)]


def documented_commands():
    sources = [("README.md", ln) for ln in readme_lines()]
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        sources += [(f"recipes/{recipe.name}", ln) for ln in shell_lines(recipe.read_text(), "#")]
    found = []
    for where, line in sources:
        m = re.search(r"(?:^|\s)rlhf train (\S+)(.*)$", line)
        if m and m.group(1) in STAGES:  # not the synopsis `rlhf train STAGE [...]`
            found.append(pytest.param(m.group(1), m.group(2), id=f"{where}: {m.group(1)}{m.group(2)}"[:110]))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_a_command_for_every_stage():
    assert {p.values[0] for p in COMMANDS} == set(STAGES)


@pytest.mark.parametrize("stage, rest", COMMANDS)
def test_documented_command_composes(stage, rest):
    words, it = [], iter(shlex.split(rest))
    for w in it:
        if w in VALUE_FLAGS:
            next(it)
        elif not w.startswith("--") and not (w.startswith("[") and w.endswith("]")):  # [optional ...] synopsis
            words.append(w)
    expected = next((msg for arg, msg in ERROR_EXAMPLES.items() if arg in words), None)
    try:
        recipe, overrides = split_args(words)
        compose(stage, recipe, overrides)
    except ConfigError as e:
        if expected is not None:
            assert str(e) == expected
            return
        key_value, _, why = str(e).partition(": ")
        value = key_value.partition("=")[2]
        hub_id = is_hub_id(value) and why.startswith("not in the Hub cache")  # tests run offline (conftest)
        assert key_value in words and (hub_id or USER_PATH.match(value) and why in ("file not found",
                                                                                    "no such directory")), \
            f"rlhf train {stage}{rest} -> {e}"
    else:
        assert expected is None, f"rlhf train {stage}{rest} should fail with {expected}"


# The key=value options of the other commands whose examples the README shows (module, its options' name).
OPTION_TABLES = {"generate": "rlhf_cli.cli.generate", "chat": "rlhf_cli.cli.chat", "label": "rlhf_cli.cli.label",
                 "eval gsm8k": "rlhf_cli.evals.gsm8k", "eval rm-accuracy": "rlhf_cli.evals.rm_accuracy",
                 "eval win-rate": "rlhf_cli.evals.win_rate", "eval kl": "rlhf_cli.evals.kl",
                 "eval perplexity": "rlhf_cli.evals.perplexity", "elo": "rlhf_cli.cli.elo",
                 "report": "rlhf_cli.cli.report", "bench": "rlhf_cli.cli.bench"}
# A synopsis' placeholders (`[key=value]`, `rounds=N`, `out=F.png`): the key is checked, not the value.
PLACEHOLDER = re.compile(r"^(key=value|[\w.]+=[A-Z]+(\.\w+)?)$")


def option_examples():
    found = []
    for line in readme_lines():
        m = re.search(r"(?:^|\s)rlhf (generate|chat|label|elo|report|bench|eval \S+)(.*)$", line)
        if m and m.group(1) != "eval KIND":  # not the synopsis
            found.append(pytest.param(m.group(1), m.group(2).strip(), id=f"{m.group(1)} {m.group(2).strip()}"[:110]))
    return found


OPTION_EXAMPLES = option_examples()


def test_the_readme_shows_option_examples():
    assert {"generate", "label", "eval gsm8k", "eval rm-accuracy", "elo", "report", "bench"} <= \
        {p.values[0] for p in OPTION_EXAMPLES}


@pytest.mark.parametrize("command, rest", OPTION_EXAMPLES)
def test_documented_options_parse(command, rest):
    from rlhf_cli.config.options import parse_kv

    assert command in OPTION_TABLES, f"`rlhf {command}`: an example of a command this test does not know"
    options = importlib.import_module(OPTION_TABLES[command]).OPTIONS
    words, it = [], iter(shlex.split(rest))
    for w in it:  # a synopsis' [optional key=value ...] brackets go, its options are checked
        w = w[1:] if w.startswith("[") else w
        w = w[:-1] if w.count("]") > w.count("[") else w
        if w == "--vs":
            next(it)  # the peer's name
        elif PLACEHOLDER.match(w):
            assert w == "key=value" or w.partition("=")[0] in options, f"`rlhf {command}`: no option {w}"
        elif command.startswith("eval ") and w.startswith("out="):
            continue  # `rlhf eval` itself takes out=FILE, for every kind (cli/app.py)
        elif "=" in w or command not in ("elo", "report", "bench"):  # those take files, runs, stages too
            words.append(w)
    parse_kv(words, options, command)
