"""LoRA end to end on the tiny random Llama: SFT and DPO learn with only the adapter changing, final/ is a
merged plain model (+ final/adapter/), ZeRO-2 and ZeRO-3 agree on 2 processes, resume is exact, GRPO's
reference is the disabled adapter."""
import json
import math

import pytest
import torch

from helpers import REPO, TINY, interrupted_then_resumed, metrics, rlhf, train_losses
from prefdata import pairs, write_jsonl

pytestmark = pytest.mark.e2e
LORA = ["model.lora.r=8", "model.lora.alpha=16"]
SFT = ["train", "sft", *TINY, *LORA, "data.limit=200", "train.micro_batch_size=2", "optim.lr=1e-2"]
DPO = ["train", "dpo", *TINY, *LORA, "data.max_length=64", "data.template=plain", "train.micro_batch_size=4",
       "optim.lr=1e-2", "data.eval_fraction=0.25", "train.save_every=0", "dpo.beta=0.5"]


def tiny_base(tokenizer):
    from rlhf_cli.config.compose import compose
    from rlhf_cli.models.loading import load_causal_lm

    return load_causal_lm(compose("sft", None, ["model=tiny"]).model, tokenizer).eval()


def logits(model, tokenizer):
    ids = tokenizer(["Question: what is 12 + 30? Answer: 42."], return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "sft"
    proc = rlhf([*SFT, "train.max_steps=12", f"output_dir={out}"])
    return out, proc


def test_lora_sft_learns_and_logs_trainable_share(sft_run):
    out, proc = sft_run
    assert "LoRA r=8 alpha=16 on q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj:" in proc.stdout
    assert "trainable parameters of" in proc.stdout
    losses = train_losses(out)
    assert sorted(losses) == list(range(1, 13))
    # a random tiny model with frozen embeddings and head moves slowly under LoRA (lr=0 stays at ~10.8)
    assert sum(losses[s] for s in (10, 11, 12)) / 3 < sum(losses[s] for s in (1, 2, 3)) / 3 - 0.1, losses


def test_only_the_adapter_changed_and_final_loads_like_any_model(sft_run, tokenizer):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, _ = sft_run
    final = out / "final"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in final.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (final / "adapter").iterdir()}
    merged = AutoModelForCausalLM.from_pretrained(str(final)).eval()
    base = tiny_base(tokenizer)
    # weights outside the adapted layers are the starting model's, bit for bit
    msd, bsd = merged.state_dict(), base.state_dict()
    for k in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"):
        assert torch.equal(msd[k], bsd[k]), k
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(msd[q], bsd[q])
    # the starting base weights + the trained adapter = the merged model: the base itself never moved
    adapter = load_file(str(final / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)  # B learned (starts at 0)
    again = PeftModel.from_pretrained(base, str(final / "adapter")).eval()
    torch.testing.assert_close(logits(merged, tokenizer), logits(again, tokenizer), atol=1e-5, rtol=0)
    proc = rlhf(["generate", f"model={out}", "prompt=Hi", "max_new_tokens=4"])
    assert proc.returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["model"]["lora"]["r"] == 8


def test_zero2_and_zero3_two_processes_agree(tmp_path):
    from safetensors.torch import load_file

    runs = {}
    for engine in ("zero2", "zero3"):
        out = tmp_path / engine
        rlhf([*SFT, "train.max_steps=3", f"engine={engine}", f"output_dir={out}", "--nproc", "2"])
        runs[engine] = (train_losses(out), load_file(str(out / "final" / "model.safetensors")),
                        load_file(str(out / "final" / "adapter" / "adapter_model.safetensors")))
    (l2, m2, a2), (l3, m3, a3) = runs["zero2"], runs["zero3"]
    assert sorted(l3) == [1, 2, 3]
    for s in l2:
        assert l3[s] == pytest.approx(l2[s], rel=1e-4)
    assert set(m2) == set(m3) and set(a2) == set(a3)  # ZeRO-3's consolidated peft keys map back alike
    for k in m2:
        torch.testing.assert_close(m3[k], m2[k], atol=1e-4, rtol=0)


def test_sigterm_and_resume_equals_uninterrupted(tmp_path):
    args = [*SFT, "train.max_steps=8", "train.save_every=0"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    rlhf([*args, f"output_dir={full}"])
    interrupted_then_resumed(args, cut, after_steps=3)
    a, b = train_losses(full), train_losses(cut)
    assert sorted(b) == list(range(1, 9))
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-5), (s, a, b)
    from safetensors.torch import load_file

    fa, fb = (load_file(str(d / "final" / "adapter" / "adapter_model.safetensors")) for d in (full, cut))
    for k in fa:
        torch.testing.assert_close(fb[k], fa[k], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", pairs())


@pytest.mark.parametrize("precompute", ["false", "true"])
def test_lora_dpo_reference_is_the_disabled_adapter(tmp_path, prefs, precompute):
    out = tmp_path / "run"
    rlhf([*DPO, f"data.path={prefs}", "train.max_steps=12", f"ref.precompute={precompute}", f"output_dir={out}"])
    losses, acc = train_losses(out), train_losses(out, "accuracy")
    # step 1: the adapter's B is 0, so policy == reference and every pair's loss is -log sigmoid(0) = log 2
    assert losses[1] == pytest.approx(math.log(2), abs=1e-5)
    assert sum(losses[s] for s in (10, 11, 12)) / 3 < losses[1] - 0.1, losses
    assert sum(acc[s] for s in (8, 9, 10, 11, 12)) / 5 >= 0.75, acc
    assert (out / "ref_logps.json").exists() == (precompute == "true")
    assert (out / "final" / "adapter" / "adapter_model.safetensors").exists()


def test_lora_grpo_kl_to_the_disabled_adapter(tmp_path):
    qs = ["Say hi.", "Name a color.", "Count to three.", "Greet me."]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": qs[i % 4]}) + "\n" for i in range(16)))
    fn = f"python:{REPO}/tests/fixtures/grpo/rewards.py:lowercase_share"
    reward = f'reward.functions=[{{name: "{fn}", alias: lower}}]'
    out = tmp_path / "run"
    proc = rlhf(["train", "grpo", *TINY, *LORA, f"data.path={data}", "data.prompt_field=prompt",
                 "data.prompt_template=null", "data.reward_fields=[]", "data.max_length=64", "grpo.max_new_tokens=8",
                 "grpo.prompts_per_step=2", "grpo.num_generations=4", "train.micro_batch_size=4",
                 "train.max_steps=3", "optim.lr=1e-2", "grpo.kl_coef=0.1", reward, f"output_dir={out}"])
    assert "Reference model loaded" not in proc.stdout
    rows = metrics(out)
    assert rows[0]["kl_loss"] == pytest.approx(0.0, abs=1e-7)  # step 1: adapter B = 0, policy == reference
    assert rows[-1]["kl_loss"] > 1e-6
    assert (out / "final" / "adapter" / "adapter_model.safetensors").exists()


def test_lora_dpo_two_process_zero3_live_disabled_adapter(tmp_path, prefs):
    out = tmp_path / "run"
    rlhf([*DPO, f"data.path={prefs}", "train.max_steps=4", "ref.precompute=false", "engine=zero3",
          f"output_dir={out}", "--nproc", "2"])
    losses = train_losses(out)
    assert losses[1] == pytest.approx(math.log(2), abs=1e-5) and losses[4] < losses[1] - 0.2, losses
    assert (out / "final" / "model.safetensors").exists()
    assert (out / "final" / "adapter" / "adapter_model.safetensors").exists()


@pytest.fixture(scope="module")
def other_model(tmp_path_factory, tokenizer):
    """A tiny model dir with other weights than the policy's (another seed): a reference that is not the base."""
    from rlhf_cli.config.compose import compose
    from rlhf_cli.models.loading import load_causal_lm, save_hf_model

    out = tmp_path_factory.mktemp("other") / "model"
    model = load_causal_lm(compose("sft", None, ["model=tiny", "model.tiny.seed=7"]).model, tokenizer)
    save_hf_model(model, None, tokenizer, out)
    return out


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_lora_rl_reference_is_ref_path_when_given(tmp_path, other_model, stage):
    """LoRA with ref.path: the KL is to that model (nonzero at step 1, where the adapter's B = 0 makes the
    disabled-adapter reference equal the policy). On main GRPO ignored ref.path and logged KL 0."""
    qs = ["Say hi.", "Name a color.", "Count to three.", "Greet me."]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": qs[i % 4]}) + "\n" for i in range(16)))
    fn = f"python:{REPO}/tests/fixtures/grpo/rewards.py:lowercase_share"
    out = tmp_path / "run"
    extra = ["critic.init=policy", "ppo.epochs=1"] if stage == "ppo" else []
    proc = rlhf(["train", stage, *TINY, *LORA, f"data.path={data}", "data.prompt_field=prompt",
                 "data.prompt_template=null", "data.reward_fields=[]", "data.max_length=64",
                 f"{stage}.max_new_tokens=8", f"{stage}.prompts_per_step=2", f"{stage}.num_generations=4",
                 "train.micro_batch_size=4", "train.max_steps=1", f"{stage}.kl_coef=0.1",
                 f'reward.functions=[{{name: "{fn}", alias: lower}}]', f"ref.path={other_model}", *extra,
                 f"output_dir={out}"])
    assert f"Reference model loaded: ref.path={other_model}" in proc.stdout
    assert "adapter disabled" not in proc.stdout
    assert abs(metrics(out)[0]["kl_loss" if stage == "grpo" else "kl"]) > 1e-2


def test_lora_dpo_reference_is_ref_path_when_given(tmp_path, prefs, other_model):
    """With ref.path the step-1 DPO loss is not log 2 (policy and reference differ), live and precomputed."""
    for precompute in ("true", "false"):
        out = tmp_path / precompute
        proc = rlhf([*DPO, f"data.path={prefs}", "train.max_steps=1", f"ref.precompute={precompute}",
                     f"ref.path={other_model}", f"output_dir={out}"])
        assert f"Reference model loaded: ref.path={other_model}" in proc.stdout
        assert abs(train_losses(out)[1] - math.log(2)) > 1e-3
