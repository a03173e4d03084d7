"""Every model family (model.tiny.arch): packed / padding-free logits equal each example run alone (sliding
windows, MoE routing; Gemma 2's soft-capped attention through the eager fallback), the padding-free RL
log-probs equal the padded ones, and LoRA's all-linear finds the family's layers."""
import pytest
import torch

from rlhf_cli.config.compose import compose
from rlhf_cli.models.families import ARCHS
from rlhf_cli.models.loading import load_causal_lm

WINDOW = 8  # shorter than the examples below, so the sliding windows bind


def tiny(arch, tokenizer, *extra):
    cfg = compose("sft", None, ["model=tiny", f"model.tiny.arch={arch}", f"model.tiny.sliding_window={WINDOW}",
                                *extra])
    return load_causal_lm(cfg.model, tokenizer).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_logits_equal_each_example_alone(arch, tokenizer, capsys):
    model = tiny(arch, tokenizer)
    if arch == "gemma2":  # soft-capped attention: eager, with a warning
        assert model.config._attn_implementation == "eager"
        assert "has attention-logit soft-capping, which SDPA cannot compute; using eager" in capsys.readouterr().err
    else:
        assert model.config._attn_implementation == "sdpa_varlen"
    g = torch.Generator().manual_seed(0)
    lens = (13, 9, 17)
    seqs = [torch.randint(10, len(tokenizer), (n,), generator=g) for n in lens]
    with torch.no_grad():
        alone = [model(input_ids=s[None], use_cache=False).logits[0] for s in seqs]
        ids = torch.cat(seqs)[None]
        pos = torch.cat([torch.arange(n) for n in lens])[None]
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
    for k, (a, s) in enumerate(zip(alone, torch.cat([torch.zeros(1, dtype=torch.long),
                                                      torch.tensor(lens).cumsum(0)])[:-1].tolist())):
        torch.testing.assert_close(packed[s:s + lens[k]], a, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_free_rl_logprobs_equal_padded(arch, tokenizer):
    from rlhf_cli.rl.experience import Sample, build_experience, response_logprobs

    model = tiny(arch, tokenizer)
    g = torch.Generator().manual_seed(1)
    samples = [Sample(torch.randint(10, 1000, (p,), generator=g).tolist(),
                      torch.randint(10, 1000, (r,), generator=g).tolist(), True) for p, r in ((5, 11), (9, 4), (3, 14))]
    with torch.no_grad():
        outs = [response_logprobs(model, build_experience(samples, torch.zeros(3), tokenizer.pad_token_id, False,
                                                          "cpu", padding_free=free), 1.0, 1024)[0]
                for free in (False, True)]
    mask = build_experience(samples, torch.zeros(3), 0, False, "cpu").response_mask.bool()
    torch.testing.assert_close(outs[1][mask], outs[0][mask], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_all_linear_finds_the_familys_layers(arch, tokenizer):
    model = tiny(arch, tokenizer, "model.lora.r=4", "model.lora.target_modules=[all-linear]")
    adapted = {n.rsplit(".", 2)[-2] if n.endswith("lora_A") else n.split(".")[-2]
               for n, _ in model.named_modules() if n.endswith(".lora_A")}
    attention = {"phi3": {"qkv_proj", "o_proj"}}.get(arch, {"q_proj", "k_proj", "v_proj", "o_proj"})
    assert attention <= adapted, adapted
    assert adapted & {"gate_proj", "up_proj", "down_proj", "gate_up_proj", "experts"}, adapted  # MLP or experts
    assert "lm_head" not in adapted
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
