"""LoRA: merged export = base + adapter, reference by disabling the adapter = a separate base copy,
only adapter parameters train, one-line errors for what cannot run here."""
import pytest
import torch

from rlhf_cli.config.compose import compose
from rlhf_cli.errors import ConfigError
from rlhf_cli.models.loading import load_causal_lm
from rlhf_cli.models.lora import (
    DisabledAdapterReference,
    adapter_dir,
    export_lora,
    merged_state_dict,
    quantization_config,
    reference_by_disabled_adapter,
)


def mcfg(*overrides):
    return compose("sft", None, ["model=tiny", *overrides]).model


def lora_model(tokenizer, r=4, alpha=8):
    model = load_causal_lm(mcfg(f"model.lora.r={r}", f"model.lora.alpha={alpha}"), tokenizer)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # B starts at zero (adapter = identity); give it weights as training would
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def batch(tokenizer):
    ids = tokenizer(["The capital of France is Paris.", "2 + 2 = 4, and 3 + 3 = 6 too."], return_tensors="pt",
                    padding=True)
    return ids.input_ids, ids.attention_mask


def seq_logps(model, ids, mask):
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (lp * mask[:, 1:]).sum(-1)


def test_only_adapter_parameters_require_grad(tokenizer, capsys):
    model = load_causal_lm(mcfg("model.lora.r=4"), tokenizer)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert any("embed_tokens" in n for n in frozen) and any("base_layer" in n for n in frozen)
    # all 7 linear layers of each of the 2 blocks get A and B
    assert len(trainable) == 2 * 7 * 2
    adapted = {n.split(".")[-4] for n in trainable}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # r * (in + out) per layer; tiny: hidden 64, 4 heads (16 each), 2 kv heads -> k/v out 32, mlp 128
    per_block = 4 * ((64 + 64) + (64 + 32) * 2 + (64 + 64) + (64 + 128) * 2 + (128 + 64))
    assert sum(p.numel() for n, p in model.named_parameters() if p.requires_grad) == 2 * per_block
    assert f"{2 * per_block:,} trainable parameters of" in capsys.readouterr().out


def test_lora_off_is_the_plain_model(tokenizer):
    model = load_causal_lm(mcfg(), tokenizer)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert all(p.requires_grad for p in model.parameters())


def test_disabled_adapter_equals_a_separate_base_copy(tokenizer):
    policy = lora_model(tokenizer)
    base = load_causal_lm(mcfg(), tokenizer).eval()  # the same seeded tiny weights, no adapter
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        expected = seq_logps(base, ids, mask)
        adapted = seq_logps(policy, ids, mask)
        with reference_by_disabled_adapter(policy):
            ref = seq_logps(policy, ids, mask)
        ref_module = seq_logps(DisabledAdapterReference(policy), ids, mask)
        after = seq_logps(policy, ids, mask)
    assert (adapted - expected).abs().max() > 1e-3  # the adapter does change the policy
    torch.testing.assert_close(ref, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref_module, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(after, adapted, atol=0, rtol=0)  # re-enabled on exit


def test_merged_export_equals_base_plus_adapter(tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    policy = lora_model(tokenizer)
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        expected = policy(input_ids=ids, attention_mask=mask).logits
    final = export_lora(policy, tokenizer, tmp_path / "final", merge=True)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in final.iterdir()}
    assert not (final / "adapter_config.json").exists()  # transformers would apply it again on the merge
    assert adapter_dir(final) == final / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter_dir(final).iterdir()}
    merged = AutoModelForCausalLM.from_pretrained(str(final)).eval()
    assert type(merged).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        got = merged(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # the adapter files alone, on a fresh base, give the same model too
    base = load_causal_lm(mcfg(), tokenizer).eval()
    again = PeftModel.from_pretrained(base, str(adapter_dir(final))).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=0)


def test_export_without_merge_holds_only_the_adapter(tokenizer, tmp_path):
    final = export_lora(lora_model(tokenizer), tokenizer, tmp_path / "final", merge=False)
    names = {p.name for p in final.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names and "model.safetensors" not in names


def test_merged_state_dict_by_hand():
    class Cfg:
        r, lora_alpha, use_rslora, fan_in_fan_out = 2, 4.0, False, False

    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])  # out 2, in 3
    a = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]])  # r x in
    b = torch.tensor([[1.0, 0.0], [0.0, -1.0]])  # out x r
    sd = {"base_model.model.model.layers.0.mlp.up_proj.base_layer.weight": w,
          "base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight": a,
          "base_model.model.model.layers.0.mlp.up_proj.lora_B.default.weight": b,
          "base_model.model.model.norm.weight": torch.ones(2)}
    out = merged_state_dict(sd, Cfg)
    assert set(out) == {"model.layers.0.mlp.up_proj.weight", "model.norm.weight"}
    # W + (4 / 2) * B @ A = W + 2 * [[1, 2, 0], [0, -1, -1]]
    assert out["model.layers.0.mlp.up_proj.weight"].tolist() == [[3.0, 4.0, 2.0], [0.0, -1.0, -3.0]]


@pytest.mark.parametrize("overrides, message", [
    (["model.lora.r=-1"], "model.lora.r=-1: must be >= 0"),
    (["model.lora.r=8", "model.lora.quantize=8bit"], "model.lora.quantize=8bit: must be one of none, 4bit"),
    (["model.lora.r=8", "model.lora.quantize=4bit"], "cannot merge into NF4 weights"),
    (["model.lora.r=8", "model.lora.dropout=1.5"], "model.lora.dropout=1.5"),
    (["model.lora.r=8", "model.lora.target_modules=[]"], "model.lora.target_modules is empty"),
])
def test_bad_lora_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        compose("sft", None, ["model=tiny", *overrides])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only error")
def test_qlora_without_cuda_is_a_one_line_error(tokenizer):
    cfg = mcfg("model.lora.r=8", "model.lora.quantize=4bit", "model.lora.merge=false")
    with pytest.raises(ConfigError, match="model.lora.quantize=4bit needs a CUDA GPU"):
        quantization_config(cfg.lora, torch.float32)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        load_causal_lm(cfg, tokenizer)


def test_unknown_target_module_is_a_one_line_error(tokenizer):
    with pytest.raises(ConfigError, match="model.lora.target_modules"):
        load_causal_lm(mcfg("model.lora.r=4", "model.lora.target_modules=[nope_proj]"), tokenizer)


def test_rm_refuses_lora_instead_of_ignoring_it():
    with pytest.raises(ConfigError, match="the rm stage does not take LoRA yet"):
        compose("rm", None, ["model=tiny", "model.lora.r=4"])
