"""The README's config reference is the one generated from the schema, and the generator covers the schema."""
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlhf_cli.config.reference import (
    _own_comments,
    config_reference_markdown,
    field_comment,
    readme_block,
    replace_block,
    schema_fields,
    shorten,
)
from rlhf_cli.config.schema import OptimConfig
from rlhf_cli.config.stage_dpo import RefSection
from rlhf_cli.config.stage_rm import PreferenceDataConfig
from rlhf_cli.config.stages import STAGES, DataConfig
from rlhf_cli.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass
class _Grouped:
    # The first field's meaning.
    first: int = 1
    second: int = 2


@pytest.fixture(scope="module")
def generated() -> str:
    return config_reference_markdown()


def _row(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| `{key}` |"))


def test_readme_block_is_the_generated_reference(generated):
    block = readme_block(README.read_text())
    assert block == generated, "README.md's config reference is out of date with the schema: run `make docs`"


def test_every_field_of_every_stage_is_documented(generated):
    for stage, info in STAGES.items():
        for key, _, _ in schema_fields(info.schema):
            assert f"| `{key}` |" in generated, f"{stage}: {key} missing from the config reference"
    for stage in STAGES:
        assert f"### `{stage}`" in generated


def test_field_comments_defaults_ranges_and_choices(generated):
    assert field_comment(OptimConfig, "lr") == "Peak learning rate of AdamW."
    assert _row(generated, "optim.lr") == "| `optim.lr` | `2e-05` | > 0 | Peak learning rate of AdamW. |"
    # Two comment lines joined; a field with no comment directly above gets none (not its neighbour's).
    assert field_comment(OptimConfig, "warmup_steps") == ("Linear warmup steps (optimizer steps). If 0, "
                                                          "warmup_ratio * total steps is used.")
    assert field_comment(_Grouped, "first") == "The first field's meaning." and field_comment(_Grouped, "second") == ""
    # Inherited: PreferenceDataConfig does not redeclare eval_path, so DataConfig's comment is used; it does
    # redeclare max_length with its own comment, which wins.
    assert "eval_path" not in _own_comments(PreferenceDataConfig)
    assert field_comment(PreferenceDataConfig, "eval_path") == field_comment(DataConfig, "eval_path") != ""
    assert field_comment(PreferenceDataConfig, "max_length").startswith("Tokens per prompt + response (redeclared")
    # A parenthesised note about another field is not the next field's meaning.
    assert field_comment(RefSection, "precompute").startswith("Compute reference log-probs once")
    # The stage's composed default and its registry's names.
    dpo_loss = _row(generated, "dpo.loss")
    assert "| `dpo` |" in dpo_loss and "one of `cdpo`, `dpo`, `ipo`, `kto`, `simpo`" in dpo_loss
    assert "| `0.28` | >= 0 |" in _row(generated.split("### `grpo`")[1], "grpo.clip_high")


def test_stage_tables_hold_only_what_the_stage_adds_or_changes(generated):
    sft = generated.split("### `sft`")[1].split("### `rm`")[0]
    assert "`data.packing`" in sft and "`optim.lr`" not in sft  # sft keeps the shared lr
    dpo = generated.split("### `dpo`")[1].split("### `ppo`")[0]
    assert "| `optim.lr` | `5e-07` |" in dpo  # conf/stage/dpo.yaml sets it
    assert "`model.name`" not in dpo and "`output_dir`" not in dpo


def test_shorten_cuts_at_a_sentence_end():
    text = "First sentence, e.g. with an abbreviation. " + "word " * 40
    assert shorten(text, 80) == "First sentence, e.g. with an abbreviation."
    assert shorten("short", 80) == "short"
    assert shorten("x" * 10 + " " + "y" * 100, 50) == "x" * 10 + " …"


def test_replace_block_keeps_the_text_around_the_markers():
    text = "intro\n<!-- config-reference:start -->\nold\n<!-- config-reference:end -->\noutro\n"
    new = replace_block(text, "new table\n")
    assert new.startswith("intro\n") and new.endswith("<!-- config-reference:end -->\noutro\n")
    assert readme_block(new) == "new table\n"
    with pytest.raises(ConfigError, match="no '<!-- config-reference:start -->'"):
        readme_block("no markers here")


def test_generated_defaults_do_not_depend_on_the_machine(generated):
    # compose() makes paths absolute and timestamps output_dir; none of that may reach the README.
    assert str(Path.cwd()) not in generated and str(README.parent) not in generated
    assert "runs/sft-" not in generated
