"""`rlhf --help` and every command's --help print their usage lines as written: Rich markup used to eat each
[bracketed] word ('rlhf elo rankings.jsonl   [--json]', 'models= k=4', 'rlhf train STAGE')."""
import re

import pytest
from typer.testing import CliRunner

from rlhf_cli.cli.app import app

COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_listed():
    top = help_text()
    assert {"train", "stages", "config", "generate", "chat", "eval", "label", "elo", "report", "setup",
            "quickstart", "bench"} <= set(COMMANDS)
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", top, re.M), name


@pytest.mark.parametrize("name", COMMANDS)
def test_each_help_shows_its_docstring_with_every_bracket(name):
    cmd = next(c for c in app.registered_commands if (c.name or c.callback.__name__) == name)
    doc = " ".join(cmd.callback.__doc__.split())
    text = " ".join(help_text(name).split())
    assert doc in text, (doc, text)
    for bracket in re.findall(r"\[[^\]]*\]", doc):
        assert bracket in text, bracket


def test_the_usage_words_the_markup_ate():
    assert "rlhf train STAGE [conf=recipe.yaml] [key=value ...]" in help_text("train")
    assert "models=[runs/sft,runs/dpo] k=4 out=rankings.jsonl" in help_text("label")
    assert "[pairs.jsonl ...] [k=4 bootstrap=1000] [--json]" in help_text("elo")
    assert "[elo=ELO.json]" in help_text("report")


def test_one_error_handler_keeps_exit_codes_and_makes_errors_one_line():
    """Every command goes through cli/app.py's one handler: an error is one line with its exit code (2 for
    config), and a command's own exit code (typer.Exit) passes through untouched."""
    bad = CliRunner().invoke(app, ["config", "sfd"])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [
        "error: unknown stage 'sfd' (did you mean 'sft'?); stages: sft, rm, dpo, ppo, grpo, rlaif"]
    ok = CliRunner().invoke(app, ["train", "sft", "model=tiny", "--dry-run"])
    assert ok.exit_code == 0 and "error" not in ok.output
