"""Every bad value gets one line at compose time: declared ranges for every numeric field of every
stage, no '+key' past the schema, launch options, the non-training commands, and validation without
side effects (no plugin code runs, no sandbox starts)."""
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from helpers import rlhf
from rlhf_cli.cli.args import parse_kv
from rlhf_cli.config.compose import compose
from rlhf_cli.config.ranges import Range, numeric_fields, range_of
from rlhf_cli.config.stages import STAGES
from rlhf_cli.errors import ConfigError


def all_numeric_fields():
    return [(stage, key, f, kind) for stage, info in STAGES.items() for key, f, kind in numeric_fields(info.schema)]


def test_every_numeric_field_of_every_stage_declares_a_range():
    fields = all_numeric_fields()
    assert len(fields) > 100  # sanity: the walk reaches nested sections of all stages
    missing = [f"{stage}: {key}" for stage, key, f, _ in fields if range_of(f) is None]
    assert not missing, f"declare a range with config.ranges.num(...) for: {missing}"


def test_every_numeric_command_option_declares_a_range():
    from rlhf_cli.cli.bench import OPTIONS as BENCH
    from rlhf_cli.cli.generate import OPTIONS as GENERATE
    from rlhf_cli.evals.gsm8k import OPTIONS as GSM8K
    from rlhf_cli.evals.rm_accuracy import OPTIONS as RM_ACC

    for name, table in {"generate": GENERATE, "bench": BENCH, "eval gsm8k": GSM8K, "eval rm-accuracy": RM_ACC}.items():
        for key, spec in table.items():
            typ = spec[0] if isinstance(spec, tuple) else spec
            if typ in (int, float):
                assert isinstance(spec, tuple) and isinstance(spec[1], Range), f"{name}: {key} has no range"


def outside(rng: Range, is_int: bool):
    """A value just outside the declared range (None if the range is unbounded)."""
    if rng.ge is not None:
        v = rng.ge - 1
    elif rng.gt is not None:
        v = rng.gt
    elif rng.le is not None:
        v = rng.le + 1
    elif rng.lt is not None:
        v = rng.lt
    else:
        return None
    while v in rng.also:
        v -= 1
    return int(v) if is_int else float(v)


_DEFAULTS = {}


@pytest.mark.parametrize("stage,key,f,kind", all_numeric_fields(),
                         ids=[f"{s}:{k}" for s, k, _, _ in all_numeric_fields()])
def test_out_of_range_value_is_one_line_naming_key_and_range(stage, key, f, kind):
    """Each field's range is enforced by the compose-time check (the default config of the stage with
    one value pushed just outside it); the issue's examples below go through the whole compose."""
    from omegaconf import OmegaConf

    from rlhf_cli.config.checks import check_config

    if stage not in _DEFAULTS:
        _DEFAULTS[stage] = compose(stage)
    cfg = _DEFAULTS[stage].copy()
    rng = range_of(f)
    bad = outside(rng, "int" in str(f.type))
    assert bad is not None
    OmegaConf.update(cfg, key, [bad, bad] if kind == "list" else bad, merge=False)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    msg = str(e.value)
    assert msg.startswith(f"{key}=") and rng.text() in msg and "\n" not in msg, msg


@pytest.mark.parametrize("override,expected", [
    ("optim.lr=0", "optim.lr=0.0: must be > 0"),
    ("optim.lr=-1", "optim.lr=-1.0: must be > 0"),
    ("train.save_every=-5", "train.save_every=-5: must be >= 0"),
    ("train.epochs=-1", "train.epochs=-1.0: must be > 0"),
    ("optim.max_grad_norm=-1", "optim.max_grad_norm=-1.0: must be >= 0"),
    ("data.limit=-5", "data.limit=-5: must be >= 0"),
    ("train.max_steps=0", "train.max_steps=0: must be -1 or >= 1"),
    ("optim.betas=[0.9,1.5]", "optim.betas=[0.9, 1.5]: each item must be in [0, 1)"),
])
def test_issue_examples(override, expected):
    with pytest.raises(ConfigError, match=None) as e:
        compose("sft", None, [override])
    assert str(e.value) == expected


def test_grpo_top_p():
    with pytest.raises(ConfigError, match=r"^grpo.top_p=2.0: must be in \(0, 1\]$"):
        compose("grpo", None, ["grpo.top_p=2"])


@pytest.mark.parametrize("override", ["+optim.foo=1", "+foo=1", "+model.tiny.bar=2", "+train.log_everyy=3"])
def test_plus_cannot_add_keys_the_schema_lacks(override):
    key = override[1:].split("=")[0]
    with pytest.raises(ConfigError, match=rf"unknown key '{key}'"):
        compose("sft", None, [override])


def test_cli_contract_for_config_dry_run_and_train(tmp_path):
    cases = [
        (["config", "sft", "+optim.foo=1"], "unknown key 'optim.foo'"),
        (["train", "sft", "train.epochs=-1", "--dry-run"], "train.epochs=-1.0: must be > 0"),
        (["train", "sft", "train.save_every=-5", f"output_dir={tmp_path}/run"], "train.save_every=-5"),
        (["train", "sft", "--nproc", "0", "--dry-run"], "--nproc=0: must be >= 1"),
        (["train", "sft", "--hostfile", str(tmp_path / "nope"), "--dry-run"], "--hostfile="),
        (["generate", "prompt=hi", "temperature=-1"], "generate: temperature=-1: must be >= 0"),
        (["eval", "gsm8k", "data=x.jsonl", "batch_size=0"], "eval gsm8k: batch_size=0: must be >= 1"),
        (["bench", "sft", "steps=0"], "bench: steps=0: must be >= 1"),
        (["bench", "sft", "steps=3"], "bench: steps=3 leaves nothing to measure after warmup=3 warm-up steps"),
        (["bench", "--vs", "trl", "ppo"], "--vs trl compares sft, rm, dpo, grpo; not 'ppo'"),
        (["bench", "--vs", "foo"], "--vs foo: the only peer is 'trl'"),
    ]
    for args, expected in cases:
        proc = rlhf(args, check=False, timeout=300)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2, (args, proc.stdout[-500:], proc.stderr[-1000:])
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (args, proc.stderr)
        assert not (tmp_path / "run").exists()


def test_bad_hostfile_line(tmp_path):
    from rlhf_cli.cli.train import check_launch_options

    hf = tmp_path / "hosts"
    hf.write_text("worker-1 slots=2\nworker-2 slots=two\n")
    with pytest.raises(ConfigError, match=r"hosts:2: expected 'HOSTNAME slots=N'"):
        check_launch_options(2, str(hf))
    hf.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="no hosts"):
        check_launch_options(2, str(hf))
    hf.write_text("localhost slots=2\n")
    check_launch_options(2, str(hf))


def test_parse_kv_types_and_ranges():
    spec = {"n": (int, Range(ge=1)), "flag": bool, "t": (float, Range(ge=0))}
    assert parse_kv(["n=3", "flag=false", "t=0"], spec, "cmd") == {"n": 3, "flag": False, "t": 0.0}
    for words, msg in ((["n=0"], "cmd: n=0: must be >= 1"), (["flag=maybe"], "expected true or false"),
                       (["t=nan"], "cmd: t=nan: must be >= 0"), (["n=1.5"], "expected int")):
        with pytest.raises(ConfigError, match=msg):
            parse_kv(words, spec, "cmd")


# ----------------------------------------------------------------------------- model dirs
@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """A causal LM dir, a reward model dir, one with a broken config.json and one without weights."""
    from rlhf_cli.models.embedded import ensure_embedded_model

    src = Path(ensure_embedded_model())
    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for name in ("causal", "reward", "broken", "noweights"):
        d = root / name
        d.mkdir()
        for f in src.iterdir():
            if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "vocab.json", "merges.txt"):
                shutil.copy(f, d / f.name)
        cfg = json.loads((src / "config.json").read_text())
        if name == "reward":
            cfg["architectures"] = ["LlamaForSequenceClassification"]
            (d / "reward_config.json").write_text(json.dumps({"type": "outcome", "template": "chat"}))
        (d / "config.json").write_text(json.dumps(cfg) if name != "broken" else '{"model_type": "llama",\n  oops')
        if name != "noweights":
            (d / "model.safetensors").symlink_to(src / "model.safetensors")
        dirs[name] = d
    return dirs


def test_model_dir_errors_in_every_command(model_dirs, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "chosen": "hello", "rejected": "go"}) + "\n")
    from rlhf_cli.cli.chat import run_chat
    from rlhf_cli.cli.generate import run_generate
    from rlhf_cli.evals.gsm8k import run as eval_gsm8k
    from rlhf_cli.evals.rm_accuracy import run as eval_rm

    in_process = [
        (lambda: run_generate([f"model={model_dirs['broken']}", "prompt=hi"]), "config.json:2: invalid JSON"),
        (lambda: run_generate([f"model={model_dirs['noweights']}", "prompt=hi"]), "no weights in"),
        (lambda: run_chat([f"model={model_dirs['reward']}"]), "is a reward model"),
        (lambda: eval_gsm8k([f"model={model_dirs['broken']}", f"data={data}"]), "invalid JSON"),
        (lambda: eval_rm([f"model={model_dirs['noweights']}", f"data={data}"]), "no weights in"),
        (lambda: compose("sft", None, [f"model.path={model_dirs['broken']}"]), "model.path="),
        (lambda: compose("dpo", None, [f"ref.path={model_dirs['reward']}"]), "ref.path="),
        (lambda: run_generate(["prompt=hi", "max_new_tokens=-5"]), "generate: max_new_tokens=-5: must be >= 1"),
    ]
    for call, expected in in_process:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            call()
    cases = [  # through the CLI: exit code 2 and exactly one line on stderr
        (["generate", f"model={model_dirs['reward']}", "prompt=hi"], "is a reward model"),
        (["eval", "rm-accuracy", f"model={model_dirs['causal']}", f"data={data}"], "is a causal LM, not a reward"),
    ]
    for args, expected in cases:
        proc = rlhf(args, check=False, timeout=300)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2, (args, proc.stdout[-500:], proc.stderr[-1500:])
        assert len(lines) == 1 and expected in lines[0], (args, proc.stderr[-1500:])


# ----------------------------------------------------------------------------- no side effects
PLUGIN = '''
import pathlib
pathlib.Path({marker!r}).write_text("plugin code ran")


def score(prompts, completions, bonus=1.0):
    return [bonus] * len(completions)
'''


def test_config_and_dry_run_never_execute_plugin_code(tmp_path):
    marker = tmp_path / "RAN"
    plugin = tmp_path / "my_reward.py"
    plugin.write_text(PLUGIN.format(marker=str(marker)))
    spec = f'reward.functions=[{{name: "python:{plugin}:score", bonus: 2.0}}]'
    for args in (["config", "grpo", spec], ["train", "grpo", spec, "--dry-run"]):
        proc = rlhf(args, check=False, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert not marker.exists(), f"{args[0]} executed the plugin's module code"
    # ...yet a wrong function name or option is still one line at compose time
    for bad, expected in ((f'{{name: "python:{plugin}:scor"}}', "defines no 'scor' (did you mean 'score'?)"),
                          (f'{{name: "python:{plugin}:score", bonnus: 1}}', "option 'bonnus' is not a parameter"),
                          (f'{{name: "python:{tmp_path}/nope.py:f"}}', "file not found")):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            compose("grpo", None, [f"reward.functions=[{bad}]"])
    assert not marker.exists()
    # a module plugin is located without importing it (or its package)
    pkg = tmp_path / "pkg_with_side_effect"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('package ran')\n")
    (pkg / "rewards.py").write_text(PLUGIN.format(marker=str(marker)))
    sys.path.insert(0, str(tmp_path))
    try:
        compose("grpo", None, ['reward.functions=[{name: "python:pkg_with_side_effect.rewards:score"}]'])
        with pytest.raises(ConfigError, match="module 'pkg_with_side_effect.nope' not found"):
            compose("grpo", None, ['reward.functions=[{name: "python:pkg_with_side_effect.nope:score"}]'])
    finally:
        sys.path.remove(str(tmp_path))
    assert not marker.exists()


def test_config_never_starts_the_code_sandbox(monkeypatch):
    from rlhf_cli.rewards import sandbox

    def boom(*a, **k):
        raise AssertionError("the sandbox was started during validation")

    monkeypatch.setattr(sandbox, "run_box", boom)
    monkeypatch.setattr(sandbox, "_PROBED", {})
    cfg = compose("grpo", None, ["reward.functions=[{name: code, timeout: 2}]"])
    assert cfg.reward.functions[0]["name"] == "code"
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        compose("grpo", None, ["reward.functions=[{name: code, timeout: 0}]"])
    with pytest.raises(ConfigError, match="did you mean 'timeout'"):
        compose("grpo", None, ["reward.functions=[{name: code, timout: 1}]"])


def test_setup_error_is_one_line(tmp_path):
    not_a_dir = tmp_path / "home-is-a-file"
    not_a_dir.write_text("")
    proc = rlhf(["setup"], check=False, timeout=300, env={"RLHF_HOME": str(not_a_dir)})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_bench_vs_trl_without_trl_installed_names_the_extra(monkeypatch):
    import sys

    from rlhf_cli.bench.peer_trl import require_trl
    from rlhf_cli.errors import ConfigError

    monkeypatch.setitem(sys.modules, "trl", None)  # import trl now raises ImportError
    with pytest.raises(ConfigError, match=r"needs TRL: pip install 'rlhf-cli\[bench\]'"):
        require_trl()
