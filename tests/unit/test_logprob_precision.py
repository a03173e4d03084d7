"""The log-probs behind ratios and KL are fp32 whatever the model's dtype: the rollout's, the teacher-forced
ones of the update, and the DPO sequence log-probs."""
import torch

from rlhf_cli.algos.logprobs import token_logprobs


def test_token_logprobs_of_bf16_logits_are_fp32_and_match_an_fp32_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 97, generator=g).to(torch.bfloat16)
    labels = torch.randint(0, 97, (2, 5), generator=g)
    out = token_logprobs(logits, labels, chunk_size=2)
    assert out.dtype == torch.float32
    ref = torch.log_softmax(logits.float(), -1).gather(-1, labels[..., None])[..., 0]
    torch.testing.assert_close(out, ref)


def test_rollout_logprobs_of_a_bf16_model_are_fp32(tokenizer):
    from rlhf_cli.config.compose import compose
    from rlhf_cli.models.loading import load_causal_lm
    from rlhf_cli.rl.experience import Sample, build_experience, response_logprobs
    from rlhf_cli.rollout.generate import generate
    from rlhf_cli.rollout.sampling import SamplingParams

    model = load_causal_lm(compose("sft", None, ["model=tiny"]).model, tokenizer).to(torch.bfloat16).eval()
    prompts = [tokenizer("Hello there")["input_ids"], tokenizer("Hi")["input_ids"]]
    out = generate(model, prompts, SamplingParams(max_new_tokens=4, temperature=1.0), eos_token_ids=[-1],
                   pad_id=tokenizer.pad_token_id, generator=torch.Generator().manual_seed(0))
    assert out.logprobs.dtype == torch.float32
    lens = out.response_lengths.tolist()
    samples = [Sample(p, out.response_ids[i, :lens[i]].tolist(), False) for i, p in enumerate(prompts)]
    exp = build_experience(samples, torch.zeros(2), tokenizer.pad_token_id, False, "cpu", padding_free=True)
    with torch.no_grad():
        logps, _ = response_logprobs(model, exp, 1.0, 1024)
    assert logps.dtype == torch.float32
