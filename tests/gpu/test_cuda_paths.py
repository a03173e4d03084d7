"""The GPU fast paths, run only where CUDA is present (skipped on CPU CI; run them on a lent GPU with
``pytest tests/gpu``): the rollout engine's static cache + CUDA-graph decode (``torch.compile``
reduce-overhead) against the eager dynamic-cache path, bf16 padding-free training with ``sdpa_varlen``
against padded rows, and a compiled training forward/backward."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny(dtype=torch.bfloat16, attn="sdpa_varlen"):
    from transformers import LlamaConfig, LlamaForCausalLM

    import rlhf_cli.models.attention  # noqa: F401  (registers sdpa_varlen)

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).to("cuda", dtype)


def test_static_cache_cuda_graph_decode_matches_dynamic():
    from rlhf_cli.rollout.generate import generate
    from rlhf_cli.rollout.sampling import SamplingParams

    model = tiny().eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (5, 9, 3, 12)]
    p = SamplingParams(max_new_tokens=16, temperature=0)
    dyn = generate(model, prompts, p, eos_token_ids=[10**6], pad_id=0)
    for _ in range(2):  # the second call replays the captured graphs
        fast = generate(model, prompts, p, eos_token_ids=[10**6], pad_id=0, static_cache=True, compile=True)
        assert torch.equal(fast.response_ids, dyn.response_ids)
        torch.testing.assert_close(fast.logprobs, dyn.logprobs, atol=2e-2, rtol=0)


def test_bf16_padding_free_training_forward_matches_padded():
    from rlhf_cli.algos.logprobs import token_logprobs
    from rlhf_cli.data.packing import build_rows, collate, collate_flat
    from rlhf_cli.data.sft import Example
    from rlhf_cli.models.forward import label_logprobs, lm_logits

    g = torch.Generator().manual_seed(2)
    exs = [Example(torch.randint(3, 256, (n,), generator=g).tolist(), [0, 0] + [1] * (n - 2)) for n in (40, 17, 64)]
    rows = build_rows(exs, 128, packing=False)
    model = tiny()
    padded = collate(rows, pad_id=0, packed=False).to("cuda")
    flat = collate_flat(rows).to("cuda")
    ref = -token_logprobs(lm_logits(model, padded.input_ids, padded.position_ids, padded.attention_mask),
                          padded.labels).sum()
    got = -label_logprobs(model, flat.input_ids, flat.position_ids, flat.labels)[0].sum()
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=0.5)


def test_compiled_training_step_runs_and_learns():
    from rlhf_cli.data.packing import build_rows, collate_flat
    from rlhf_cli.data.sft import Example
    from rlhf_cli.models.forward import label_logprobs

    g = torch.Generator().manual_seed(3)
    exs = [Example(torch.randint(3, 256, (32,), generator=g).tolist(), [1] * 32) for _ in range(4)]
    batch = collate_flat(build_rows(exs, 64, packing=False)).to("cuda")
    model = tiny()
    model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=True)
    losses = []
    for _ in range(8):
        loss = -label_logprobs(model, batch.input_ids, batch.position_ids, batch.labels)[0].mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.5, losses
