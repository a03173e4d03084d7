"""The packaged constitution, template rendering, seeded principle draws, and one-line errors for bad files."""
import pytest

from rlhf_cli.data.constitution import TEMPLATE_FIELDS, load_constitution
from rlhf_cli.errors import ConfigError


def test_default_constitution_is_complete():
    c = load_constitution("default")
    assert 8 <= len(c.principles) <= 12
    assert len({p.name for p in c.principles}) == len(c.principles)
    for p in c.principles:
        assert p.critique_request and p.revision_request and p.comparison_question.endswith("?")
    assert set(c.templates) == set(TEMPLATE_FIELDS)
    assert len(c.sha256) == 64


def test_templates_render_every_field():
    c = load_constitution("default")
    p = c.principles[0]
    text = c.render("compare", prompt="PROMPT", question=p.comparison_question, response_a="RA", response_b="RB",
                    label_a="A", label_b="B")
    assert "PROMPT" in text and p.comparison_question in text
    assert text.index("Response A: RA") < text.index("Response B: RB")
    crit = c.render("critique", prompt="P", response="R", critique_request=p.critique_request)
    assert "User: P" in crit and "Assistant: R" in crit and p.critique_request in crit
    rev = c.render("revision", prompt="P", response="R", critique="C", revision_request=p.revision_request)
    assert "Critique: C" in rev and p.revision_request in rev
    assert "{" not in c.render("score", prompt="P", response="R")


def test_draws_are_seeded_and_cover_the_principles():
    c = load_constitution("default")
    a = [c.draw(42, 1, i, 0).name for i in range(200)]
    assert a == [c.draw(42, 1, i, 0).name for i in range(200)]
    assert a != [c.draw(43, 1, i, 0).name for i in range(200)]
    assert len(set(a)) == len(c.principles)


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


GOOD = """principles:
  - name: kind
    critique_request: Is it unkind?
    revision_request: Make it kind.
    comparison_question: Which is kinder?
"""


def test_user_file_replaces_principles_and_keeps_default_templates(tmp_path):
    c = load_constitution(write(tmp_path, GOOD))
    assert [p.name for p in c.principles] == ["kind"]
    assert c.templates == load_constitution("default").templates


@pytest.mark.parametrize("text, expected", [
    ("principles: []\n", "'principles' must be a non-empty list"),
    ("- a\n- b\n", "a constitution must be a YAML mapping"),
    ("principles: [\n", "invalid YAML"),
    (GOOD + "  - critique_request: x\n    revision_request: y\n", "principles[1]: missing 'comparison_question'"),
    (GOOD + "  - critique_request: x\n    revison_request: y\n    comparison_question: z\n",
     "principles[1]: unknown key 'revison_request' (did you mean 'revision_request'?)"),
    (GOOD.replace("Make it kind.", "''"), "principles[0].revision_request: must be a non-empty string"),
    (GOOD + "templates:\n  compare: 'Which? {respons_a}'\n", "templates.compare uses unknown field '{respons_a}'"),
    (GOOD + "templates:\n  comparre: x\n", "unknown template 'templates.comparre' (did you mean 'compare'?)"),
    (GOOD + "principals: []\n", "unknown top-level key 'principals'"),
    (GOOD + GOOD[len("principles:\n"):], "principles[1]: duplicate name 'kind'"),
])
def test_bad_files_give_one_line_errors_naming_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_constitution(path)
    msg = str(e.value)
    assert expected in msg and path in msg and "\n" not in msg


def test_missing_file_and_unknown_name():
    with pytest.raises(ConfigError, match="file not found"):
        load_constitution("/nope/c.yaml")
    with pytest.raises(ConfigError, match="did you mean 'default'"):
        load_constitution("defualt")
