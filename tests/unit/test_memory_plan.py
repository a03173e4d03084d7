"""The memory plan of --dry-run, checked against DeepSpeed's own estimators and hand-derived figures for a
7B Llama (Llama-2-7B's config: 6,738,415,616 parameters) on 8 GPUs."""
import json

import pytest

from rlhf_cli.config.compose import compose
from rlhf_cli.engine.memory import GiB, activation_bytes, frozen_weights, kv_cache_bytes, trainable_model_states
from rlhf_cli.training.memory_plan import parse_size, plan

LLAMA_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "vocab_size": 32000, "tie_word_embeddings": False, "max_position_embeddings": 4096}
P7B = 6_738_415_616
EMBED = 32000 * 4096  # the largest single layer (embedding, and the untied LM head)


@pytest.fixture(scope="module")
def llama7b(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama7b")
    (d / "config.json").write_text(json.dumps(LLAMA_7B))  # a config alone: no weights are read
    rm = tmp_path_factory.mktemp("rm7b")
    (rm / "config.json").write_text(json.dumps({**LLAMA_7B, "architectures": ["LlamaForSequenceClassification"]}))
    (rm / "reward_config.json").write_text("{}")
    return d, rm


def test_model_states_are_deepspeeds_estimates():
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    gpu2 = trainable_model_states(P7B, EMBED, 2, 8)[0]
    assert gpu2 == estimate_zero2_model_states_mem_needs(P7B, 8, 1, cpu_offload=False)[1]
    assert gpu2 == 2 * P7B + 18 * P7B // 8  # 16-bit weights + (grads 16/32-bit, fp32 master, Adam) / 8
    gpu3 = trainable_model_states(P7B, EMBED, 3, 8)[0]
    assert gpu3 == estimate_zero3_model_states_mem_needs(P7B, EMBED, 8, 1, cpu_offload=False,
                                                         cpu_offload_params=False)[1]
    assert gpu3 == 4 * EMBED + 18 * P7B // 8
    assert trainable_model_states(P7B, EMBED, 3, 8, offload_optimizer=True, offload_params=True)[0] == 4 * EMBED
    assert trainable_model_states(P7B, EMBED, 0, 8)[0] == 16 * P7B
    assert frozen_weights(P7B, EMBED, 2) == (2 * P7B, 0)
    assert frozen_weights(P7B, EMBED, 2, 8)[0] == 2 * (P7B // 8 + EMBED)
    assert frozen_weights(P7B, EMBED, 2, offload=True) == (0, 4 * P7B)
    # KV cache of 64 sequences x 1024 tokens: 2 x 32 layers x 32 heads x 128 x 2 bytes x 64 x 1024 = 32 GiB
    assert kv_cache_bytes(64, 1024, 32, 32, 128, 2) == 32 * GiB
    # Korthikanti et al. 2022: 34 s b h per layer (16-bit, flash attention), 2 s b h with checkpointing
    assert activation_bytes(1024, 4096, 32, 0, 2, False, 0) == 34 * 1024 * 4096 * 32
    assert activation_bytes(1024, 4096, 32, 0, 2, True, 0) == 2 * 1024 * 4096 * 32 + 34 * 1024 * 4096


def test_ppo_7b_on_8_gpus_names_the_settings_that_fit(llama7b):
    policy, rm = llama7b
    over = [f"model.path={policy}", f"reward.functions=[{{name: model, path: {rm}}}]", "critic.init=reward_model",
            "train.micro_batch_size=1", "data.max_length=1024", "ppo.prompts_per_step=8", "ppo.max_new_tokens=256"]
    cfg = compose("ppo", None, [*over, "engine=zero2", "output_dir=/tmp/unused"])
    p = plan(cfg, 8, 1, 80 * GiB)
    roles = {x.role: x for x in p.lines}
    assert set(roles) == {"actor", "critic", "reference", "reward model 1"}
    assert roles["actor"].params == P7B and roles["critic"].params < P7B  # a value head instead of the LM head
    assert roles["actor"].gpu == 2 * P7B + 18 * P7B // 8 and roles["reference"].gpu == 2 * P7B
    assert p.fits is False and "does NOT fit" in p.text()
    labels = [s for s, _ in p.suggestions]
    assert "engine=zero3" in labels and "train.micro_batch_size=1" not in labels  # already 1
    z3 = plan(compose("ppo", None, [*over, "engine=zero3", "output_dir=/tmp/unused"]), 8, 1, 80 * GiB)
    assert z3.fits and {x.role: x for x in z3.lines}["reference"].gpu == 2 * (P7B // 8 + EMBED)
    lora = plan(compose("ppo", None, [*over, "engine=zero3", "model.lora.r=16", "output_dir=/tmp/unused"]), 8, 1,
                80 * GiB)
    assert {x.role: x for x in lora.lines}["reference"].gpu == 0  # the actor with its adapter off


def test_dry_run_prints_the_plan(llama7b, tmp_path):
    from helpers import rlhf

    policy, _ = llama7b
    proc = rlhf(["train", "dpo", f"model.path={policy}", "data.path=builtin:hh_harmless_sample.jsonl",
                 "ref.precompute=false", f"output_dir={tmp_path / 'run'}", "--dry-run", "--gpu-mem", "24GiB"])
    text = proc.stdout
    assert "# memory plan per GPU (1 GPU(s) x 1 node(s), ZeRO-2, bf16; GPU 24.0 GiB)" in text
    assert "does NOT fit" in text and "fits with:" not in text.split("does NOT fit")[0]
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
    bad = rlhf(["train", "sft", "model=tiny", "--gpu-mem", "lots", "--dry-run"], check=False)
    assert bad.returncode == 2 and "--gpu-mem=lots: a size like 80GiB" in bad.stderr
    assert parse_size("80GiB") == 80 * GiB and parse_size("24GB") == 24 * 10 ** 9
