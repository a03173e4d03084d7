"""Frozen models (the DPO / GRPO reference) hold no optimizer state and no gradients after real training
steps, are not train engines, and an offloaded reference (``ref.offload=true``) gives the same logits."""
import json

import pytest

from helpers import REPO, run_script
from prefdata import pairs, write_jsonl

pytestmark = pytest.mark.e2e
TINY = ["model=tiny", "log.progress=false", "optim.warmup_steps=1", "train.max_steps=2", "train.save_every=0"]
DPO = ["data.max_length=64", "data.template=plain", "train.micro_batch_size=4", "data.eval_fraction=0",
       "optim.lr=1e-3", "ref.precompute=false"]
REWARD = f'reward.functions=[{{name: "python:{REPO}/tests/fixtures/grpo/rewards.py:lowercase_share", alias: lower}}]'


def facts(proc) -> dict:
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("FACTS ")]
    return json.loads(line[len("FACTS "):])


def assert_frozen(f: dict, kind: str) -> None:
    assert f["engines"] == ["policy"] and f["steps"] == 2
    (ref,) = f["frozen"]
    assert ref["type"] == kind and ref["num_params"] > 0
    assert not ref["requires_grad_any"], "a frozen parameter requires grad"
    assert not ref["grad_any"], "a frozen parameter has a gradient after training steps"
    assert not ref["is_engine"] and not ref["shares_params_with_engines"]
    assert ref["optimizer"] in (None, "DeepSpeedZeRoOffload") and not ref["optimizer_state"], ref
    assert not ref["training"]


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", pairs(32))


def test_dpo_live_reference_is_frozen_and_offload_gives_the_same_logits(tmp_path, pair_data):
    proc = run_script("frozen_facts.py", ["dpo", str(tmp_path / "run"), *TINY, *DPO, f"data.path={pair_data}"])
    f = facts(proc)
    assert_frozen(f, "LlamaForCausalLM")
    assert f["offload_logits_max_diff"] == 0.0


def test_grpo_offloaded_reference_is_frozen(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name a color {i}."}) + "\n" for i in range(8)))
    proc = run_script("frozen_facts.py", [
        "grpo", str(tmp_path / "run"), *TINY, f"data.path={prompts}", "data.prompt_field=prompt",
        "data.prompt_template=null", "data.reward_fields=[]", "data.max_length=64", "grpo.max_new_tokens=6",
        "grpo.prompts_per_step=2", "grpo.num_generations=2", "train.micro_batch_size=4", "optim.lr=1e-2",
        "grpo.kl_coef=0.1", "ref.offload=true", REWARD])
    f = facts(proc)
    assert_frozen(f, "OffloadedModel")
    assert f["offload_logits_max_diff"] == 0.0
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("kl_loss" in r for r in rows) and rows[-1]["grad_norm"] > 0  # the reference was used, the policy trained


def test_zero3_two_processes_reference_is_sharded_and_frozen(tmp_path, pair_data):
    proc = run_script("frozen_facts.py", ["dpo", str(tmp_path / "run"), *TINY, *DPO, f"data.path={pair_data}",
                                          "engine=zero3"], nproc=2)
    f = facts(proc)
    assert f["world_size"] == 2
    assert_frozen(f, "DeepSpeedEngine")
