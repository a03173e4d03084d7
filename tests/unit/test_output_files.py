"""`out=` of rlhf eval / elo / label (and win-rate's `judgements=`) never names one of the command's own
inputs (writing it would destroy them), and output files are written whole or not at all."""
import json

import pytest
from tests.helpers import rlhf

from rlhf_cli.errors import ConfigError
from rlhf_cli.output_files import file_values, output_file, write_output


def _refused(proc, path, before):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is also an input" in lines[0] and str(path) in lines[0], proc.stderr
    assert path.read_text() == before  # nothing was written over it


def test_elo_refuses_to_write_its_ratings_over_the_judgements(tmp_path):
    f = tmp_path / "rankings.jsonl"
    f.write_text(json.dumps({"winner": "a", "loser": "b"}) + "\n" + json.dumps({"winner": "b", "loser": "a"}) + "\n")
    before = f.read_text()
    _refused(rlhf(["elo", str(f), f"out={f}", "bootstrap=0"], check=False), f, before)
    # the same file under another spelling is the same file
    _refused(rlhf(["elo", str(f), f"out={tmp_path}/./rankings.jsonl", "bootstrap=0"], check=False), f, before)
    ok = tmp_path / "sub" / "elo.json"  # a new folder is made for a new out= file
    rlhf(["elo", str(f), f"out={ok}", "bootstrap=0"])
    assert {r["model"] for r in json.loads(ok.read_text())["ratings"]} == {"a", "b"}


def test_eval_refuses_out_naming_its_data(tmp_path):
    data = tmp_path / "heldout.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    before = data.read_text()
    _refused(rlhf(["eval", "perplexity", f"model={tmp_path}/nomodel", f"data={data}", f"out={data}"], check=False),
             data, before)
    # win-rate's judgements= file too (refused before any model is loaded)
    _refused(rlhf(["eval", "win-rate", f"model_a={tmp_path}/a", f"model_b={tmp_path}/b", f"data={data}",
                   f"judgements={data}"], check=False), data, before)


def test_label_refuses_out_naming_its_prompts(tmp_path):
    from rlhf_cli.cli.label import prepare

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    with pytest.raises(ConfigError, match="label: out=.*is also an input"):
        prepare([f"prompts={prompts}", "models=[x,y]", f"out={prompts}"], log=lambda *_: None)


def test_helpers(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text("x\n")
    assert file_values(["data=a.jsonl", "models=[r/sft, r/dpo]", "pos"]) == ["a.jsonl", "r/sft", "r/dpo", "pos"]
    assert output_file(str(tmp_path / "new.json"), [str(a), "not-a-file", "12"], "eval") == tmp_path / "new.json"
    with pytest.raises(ConfigError, match=r"^eval: out=.*a\.jsonl is also an input"):
        output_file(str(a), ["12", str(a)], "eval")
    write_output(a, "replaced\n")
    assert a.read_text() == "replaced\n" and [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]  # no temp left
