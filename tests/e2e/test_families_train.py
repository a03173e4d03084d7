"""Every family (model.tiny.arch) trains SFT (packed rows), DPO and GRPO steps end to end, losses finite."""
import json
import math

import pytest

from helpers import LOWERCASE_REWARD, TINY, metrics, rlhf
from prefdata import pairs, write_jsonl
from rlhf_cli.models.families import ARCHS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    prompts = d / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say hi {i}."}) + "\n" for i in range(8)))
    return write_jsonl(d / "pairs.jsonl", pairs(16)), prompts


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "llama"])  # llama: every other e2e test
def test_family_trains_sft_dpo_grpo(arch, data, tmp_path):
    prefs, prompts = data
    fam = [*TINY, f"model.tiny.arch={arch}", "model.tiny.sliding_window=16", "train.save_every=0"]
    runs = {
        "sft": ["train", "sft", *fam, "data.limit=16", "train.micro_batch_size=2", "train.max_steps=2"],
        "dpo": ["train", "dpo", *fam, f"data.path={prefs}", "data.max_length=64", "data.template=plain",
                "train.micro_batch_size=2", "train.max_steps=1", "data.eval_fraction=0"],
        "grpo": ["train", "grpo", *fam, f"data.path={prompts}", "data.prompt_field=prompt", "data.prompt_template=null",
                 "data.reward_fields=[]", "data.max_length=64", "grpo.max_new_tokens=4", "grpo.prompts_per_step=1",
                 "grpo.num_generations=2", "train.micro_batch_size=2", "train.max_steps=1", LOWERCASE_REWARD],
    }
    for stage, args in runs.items():
        out = tmp_path / stage
        rlhf([*args, f"output_dir={out}"])
        loss = "policy_loss" if stage == "grpo" else "loss"
        rows = [r for r in metrics(out) if loss in r]
        assert rows and all(math.isfinite(r[loss]) for r in rows), (stage, rows)
        assert (out / "final" / "model.safetensors").exists()
        if stage == "sft":
            assert rows[-1]["padding_fraction"] == 0.0  # packed, padding-free rows
