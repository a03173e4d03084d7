"""Correctness tests for the rollout engine (rlhf_cli.rollout.generate / sampling)."""

from __future__ import annotations

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from rlhf_cli.rollout.generate import RolloutBatch, generate, left_pad  # noqa: E402
from rlhf_cli.rollout.sampling import (  # noqa: E402
    SamplingParams,
    apply_top_k,
    apply_top_p,
    process_logits,
    sample,
)

torch.set_num_threads(2)

VOCAB = 128
PAD = 0
NO_EOS = [VOCAB + 1000]  # an id the model can never produce


def _tiny_model(seed: int = 0, dtype=torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(cfg).to(dtype)
    # larger init -> peakier, less tie-prone distributions for the random model
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    model.eval()
    return model


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return _tiny_model()


def _prompts(n: int = 5, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = [3, 7, 1, 5, 10, 4, 8, 2][:n]
    return [torch.randint(3, VOCAB, (L,), generator=g).tolist() for L in lens]


class CharTokenizer:
    """Char-level fake tokenizer: token i -> one lowercase letter."""

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(chr(ord("a") + (int(i) % 26)) for i in ids)


# --------------------------------------------------------------------------- sampling.py


def test_process_logits_top_p_top_k_sets():
    probs = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    perm = torch.tensor([3, 0, 4, 1, 2])  # shuffle so the sort/scatter path is exercised
    logits = probs.log()[perm].unsqueeze(0)  # position j holds prob probs[perm[j]]

    def kept(lg):
        return set(perm[torch.isfinite(lg[0])].tolist())  # as indices into `probs`

    assert kept(apply_top_p(logits, 0.45)) == {0}
    assert kept(apply_top_p(logits, 0.65)) == {0, 1}
    assert kept(apply_top_p(logits, 0.75)) == {0, 1, 2}
    assert kept(apply_top_p(logits, 1e-6)) == {0}
    assert kept(apply_top_p(logits, 1.0)) == {0, 1, 2, 3, 4}
    assert kept(apply_top_k(logits, 2)) == {0, 1}
    assert kept(apply_top_k(logits, 1)) == {0}
    assert kept(apply_top_k(logits, 0)) == {0, 1, 2, 3, 4}

    # combined: temperature then top-k then top-p; kept values are the temperature-scaled logits
    p = SamplingParams(max_new_tokens=1, temperature=0.5, top_k=3, top_p=0.9)
    out = process_logits(logits, p)
    fin = torch.isfinite(out[0])
    assert torch.allclose(out[0][fin], logits[0][fin] / 0.5)
    # after T=0.5, probs ∝ p^2 over top-3: .25,.04,.0225 -> .80,.128,.072 ; top-p .9 keeps {0,1}
    assert kept(out) == {0, 1}
    # greedy leaves logits untouched (fp32)
    g = process_logits(logits.half(), SamplingParams(max_new_tokens=1, temperature=0))
    assert g.dtype == torch.float32


def test_sample_respects_filter_and_greedy():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0]]).repeat(64, 1)
    filt = apply_top_k(logits, 2)
    gen = torch.Generator().manual_seed(0)
    toks = sample(filt, gen)
    assert set(toks.tolist()) <= {1, 2} and len(set(toks.tolist())) == 2
    assert sample(logits, greedy=True).tolist() == [1] * 64


def test_sample_matches_distribution():
    probs = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05, 0.0])
    logits = probs.log().unsqueeze(0).repeat(20000, 1)  # last token has p=0 (-inf)
    toks = sample(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(toks, minlength=6).float() / toks.numel()
    assert freq[5] == 0
    assert torch.allclose(freq, probs, atol=0.015), freq


def test_top_p_window_growth_is_exact():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 1000, generator=g) * 0.5  # flat-ish: top-4 mass << top_p
    for top_p in (0.3, 0.9, 0.99):
        fast = apply_top_p(logits, top_p, first_k=4)
        full = apply_top_p(logits, top_p, first_k=1000)
        assert torch.equal(torch.isfinite(fast), torch.isfinite(full))
        # reference via full sort
        sp, si = torch.softmax(logits, -1).sort(-1, descending=True)
        n_keep = ((sp.cumsum(-1) - sp) < top_p).sum(-1)
        assert torch.equal(torch.isfinite(fast).sum(-1), n_keep)


def test_sampling_params_validation():
    with pytest.raises(ValueError):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError):
        SamplingParams(max_new_tokens=4, top_p=0.0)
    assert SamplingParams(max_new_tokens=4, stop_strings="x").stop_strings == ("x",)


# --------------------------------------------------------------------------- generate.py


def test_left_pad():
    ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]]
    assert mask.tolist() == [[1, 1], [0, 1]]


def test_greedy_matches_hf_generate_with_left_padding(model):
    prompts = _prompts(5)
    n_new = 12
    out = generate(model, prompts, SamplingParams(max_new_tokens=n_new, temperature=0),
                   eos_token_ids=NO_EOS, pad_id=PAD)
    ids, mask = left_pad(prompts, PAD)
    hf = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n_new,
                        min_new_tokens=n_new, eos_token_id=NO_EOS[0], pad_token_id=PAD)
    assert torch.equal(out.prompt_ids, ids)
    assert torch.equal(out.prompt_mask, mask)
    assert out.response_ids.shape == (5, n_new)
    assert torch.equal(out.response_ids, hf[:, ids.size(1):])
    assert out.response_mask.all() and not out.finished.any()
    # each row also equals generating that prompt alone (no padding at all)
    for i, p in enumerate(prompts):
        solo = generate(model, [p], SamplingParams(max_new_tokens=n_new, temperature=0),
                        eos_token_ids=NO_EOS, pad_id=PAD)
        assert solo.response_ids[0].tolist() == out.response_ids[i].tolist()


def test_greedy_with_eos_matches_hf(model):
    prompts = _prompts(6)
    base = generate(model, prompts, SamplingParams(max_new_tokens=10, temperature=0),
                    eos_token_ids=NO_EOS, pad_id=PAD)
    eos = int(base.response_ids[1, 3])
    out = generate(model, prompts, SamplingParams(max_new_tokens=10, temperature=0),
                   eos_token_ids=[eos], pad_id=PAD)
    ids, mask = left_pad(prompts, PAD)
    hf = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10,
                        eos_token_id=eos, pad_token_id=PAD)
    hf_resp = hf[:, ids.size(1):]
    L = out.response_ids.size(1)
    assert hf_resp.size(1) == L
    assert torch.equal(out.response_ids, hf_resp)


def test_eos_mask_pad_and_finished(model):
    prompts = _prompts(6)
    n_new = 10
    base = generate(model, prompts, SamplingParams(max_new_tokens=n_new, temperature=0),
                    eos_token_ids=NO_EOS, pad_id=PAD)
    eos = int(base.response_ids[0, 2])
    out = generate(model, prompts, SamplingParams(max_new_tokens=n_new, temperature=0),
                   eos_token_ids=[eos, NO_EOS[0]], pad_id=PAD)
    exp_lens, exp_fin = [], []
    for row in base.response_ids.tolist():
        if eos in row:
            exp_lens.append(row.index(eos) + 1)
            exp_fin.append(True)
        else:
            exp_lens.append(n_new)
            exp_fin.append(False)
    assert exp_fin[0] and exp_lens[0] <= 3
    assert out.response_ids.size(1) == max(exp_lens)
    assert out.response_lengths.tolist() == exp_lens
    assert out.finished.tolist() == exp_fin
    for i, n in enumerate(exp_lens):
        assert out.response_ids[i, :n].tolist() == base.response_ids[i, :n].tolist()
        assert out.response_ids[i, n - 1].item() == eos or not exp_fin[i]
        assert (out.response_ids[i, n:] == PAD).all()
        assert out.response_mask[i, :n].all() and not out.response_mask[i, n:].any()
        assert (out.logprobs[i, n:] == 0).all()
        assert (out.logprobs[i, :n] <= 0).all()


def test_all_rows_finish_early_stops_loop(model):
    prompts = _prompts(3)
    base = generate(model, prompts, SamplingParams(max_new_tokens=8, temperature=0),
                    eos_token_ids=NO_EOS, pad_id=PAD)
    firsts = base.response_ids[:, 0].tolist()
    out = generate(model, prompts, SamplingParams(max_new_tokens=8, temperature=0),
                   eos_token_ids=firsts, pad_id=PAD)
    assert out.response_ids.shape == (3, 1)
    assert out.finished.all() and out.response_mask.all()


def test_truncated_rows_not_finished(model):
    out = generate(model, _prompts(4), SamplingParams(max_new_tokens=5, temperature=0.8, seed=0),
                   eos_token_ids=NO_EOS, pad_id=PAD)
    assert out.response_ids.shape == (4, 5)
    assert not out.finished.any()
    assert out.response_mask.all()


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (0.7, 20, 0.9), (1.3, 5, 1.0)])
def test_logprobs_match_teacher_forcing(model, temperature, top_k, top_p):
    prompts = _prompts(6)
    eos = 7
    p = SamplingParams(max_new_tokens=16, temperature=temperature, top_k=top_k, top_p=top_p, seed=123)
    out = generate(model, prompts, p, eos_token_ids=[eos], pad_id=PAD)
    assert out.logprobs.dtype == torch.float32
    input_ids, attn, pos = out.sequence_inputs()
    P, L = out.prompt_ids.size(1), out.response_ids.size(1)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attn, position_ids=pos).logits.float()
    lp = torch.log_softmax(logits[:, P - 1 : P - 1 + L] / temperature, dim=-1)
    ref = lp.gather(-1, out.response_ids[..., None]).squeeze(-1) * out.response_mask
    assert torch.allclose(out.logprobs, ref, atol=1e-4), (out.logprobs - ref).abs().max()
    assert (out.logprobs[out.response_mask == 0] == 0).all()


def test_greedy_logprobs_are_unscaled(model):
    prompts = _prompts(3)
    out = generate(model, prompts, SamplingParams(max_new_tokens=6, temperature=0),
                   eos_token_ids=NO_EOS, pad_id=PAD)
    input_ids, attn, pos = out.sequence_inputs()
    P, L = out.prompt_ids.size(1), out.response_ids.size(1)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attn, position_ids=pos).logits.float()
    lp = torch.log_softmax(logits[:, P - 1 : P - 1 + L], dim=-1)
    ref = lp.gather(-1, out.response_ids[..., None]).squeeze(-1)
    assert torch.allclose(out.logprobs, ref, atol=1e-4)
    # greedy token = argmax of teacher-forced logits
    assert torch.equal(out.response_ids, logits[:, P - 1 : P - 1 + L].argmax(-1))


def test_top_k1_and_tiny_top_p_equal_greedy(model):
    prompts = _prompts(5)
    kw = dict(eos_token_ids=NO_EOS, pad_id=PAD)
    greedy = generate(model, prompts, SamplingParams(max_new_tokens=10, temperature=0), **kw)
    k1 = generate(model, prompts, SamplingParams(max_new_tokens=10, temperature=1.0, top_k=1, seed=3), **kw)
    p0 = generate(model, prompts, SamplingParams(max_new_tokens=10, temperature=1.0, top_p=1e-6, seed=4), **kw)
    assert torch.equal(k1.response_ids, greedy.response_ids)
    assert torch.equal(p0.response_ids, greedy.response_ids)


def test_seed_reproducibility(model):
    prompts = _prompts(5)
    kw = dict(eos_token_ids=NO_EOS, pad_id=PAD)
    a = generate(model, prompts, SamplingParams(max_new_tokens=12, temperature=1.0, seed=11), **kw)
    b = generate(model, prompts, SamplingParams(max_new_tokens=12, temperature=1.0, seed=11), **kw)
    c = generate(model, prompts, SamplingParams(max_new_tokens=12, temperature=1.0, seed=12), **kw)
    assert torch.equal(a.response_ids, b.response_ids)
    assert torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.response_ids, c.response_ids)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    d = generate(model, prompts, SamplingParams(max_new_tokens=12, temperature=1.0), generator=g1, **kw)
    e = generate(model, prompts, SamplingParams(max_new_tokens=12, temperature=1.0), generator=g2, **kw)
    assert torch.equal(d.response_ids, e.response_ids)


def test_batch_size_split_matches_single_batch(model):
    prompts = _prompts(8)
    base = generate(model, prompts, SamplingParams(max_new_tokens=10, temperature=0),
                    eos_token_ids=NO_EOS, pad_id=PAD)
    eos = int(base.response_ids[2, 4])  # make some rows finish early -> ragged sub-batches
    p = SamplingParams(max_new_tokens=10, temperature=0)
    one = generate(model, prompts, p, eos_token_ids=[eos], pad_id=PAD)
    split = generate(model, prompts, p, eos_token_ids=[eos], pad_id=PAD, batch_size=3)
    for name in ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "finished"):
        assert torch.equal(getattr(one, name), getattr(split, name)), name
    assert torch.allclose(one.logprobs, split.logprobs, atol=1e-5)


def test_stop_strings(model):
    tok = CharTokenizer()
    prompts = _prompts(5)
    n_new = 12
    base = generate(model, prompts, SamplingParams(max_new_tokens=n_new, temperature=0),
                    eos_token_ids=NO_EOS, pad_id=PAD)
    texts = base.texts(tok)
    stop = texts[0][3:5]  # a 2-char string row 0 produces at tokens 3..4
    out = generate(model, prompts, SamplingParams(max_new_tokens=n_new, temperature=0, stop_strings=(stop,)),
                   eos_token_ids=NO_EOS, pad_id=PAD, tokenizer=tok)
    for i, text in enumerate(texts):
        j = text.find(stop)
        exp_len = j + len(stop) if j >= 0 else n_new
        assert out.response_lengths[i].item() == exp_len
        assert out.finished[i].item() == (j >= 0)
        assert out.texts(tok)[i] == text[:exp_len]  # stop string kept in the response
    assert out.finished[0] and out.response_lengths[0].item() <= 5
    with pytest.raises(ValueError):
        generate(model, prompts, SamplingParams(max_new_tokens=4, stop_strings=("x",)),
                 eos_token_ids=NO_EOS, pad_id=PAD)


def test_train_mode_restored_and_bf16(model):
    m = _tiny_model(seed=2, dtype=torch.bfloat16)
    m.train()
    out = generate(m, _prompts(4), SamplingParams(max_new_tokens=6, temperature=0.9, seed=0),
                   eos_token_ids=NO_EOS, pad_id=PAD)
    assert m.training
    assert out.logprobs.dtype == torch.float32
    assert torch.isfinite(out.logprobs).all() and (out.logprobs <= 0).all()
    assert ((out.response_ids >= 0) & (out.response_ids < VOCAB)).all()
    model.eval()
    generate(model, _prompts(2), SamplingParams(max_new_tokens=2, temperature=0), eos_token_ids=NO_EOS, pad_id=PAD)
    assert not model.training


def test_static_cache_matches_dynamic(model):
    prompts = _prompts(7)
    p = SamplingParams(max_new_tokens=9, temperature=0)
    base = generate(model, prompts, p, eos_token_ids=NO_EOS, pad_id=PAD)
    eos = int(base.response_ids[1, 3])
    dyn = generate(model, prompts, p, eos_token_ids=[eos], pad_id=PAD, batch_size=3)
    sta = generate(model, prompts, p, eos_token_ids=[eos], pad_id=PAD, batch_size=3, static_cache=True)
    assert torch.equal(dyn.response_ids, sta.response_ids)
    assert torch.equal(dyn.response_mask, sta.response_mask)
    assert torch.allclose(dyn.logprobs, sta.logprobs, atol=1e-5)
    ps = SamplingParams(max_new_tokens=9, temperature=0.7, top_p=0.9, seed=1)
    a = generate(model, prompts, ps, eos_token_ids=[eos], pad_id=PAD)
    b = generate(model, prompts, ps, eos_token_ids=[eos], pad_id=PAD, static_cache=True)
    assert torch.equal(a.response_ids, b.response_ids)
    with pytest.raises(ValueError):
        generate(model, prompts, p, eos_token_ids=NO_EOS, pad_id=PAD, compile=True)


def test_rollout_batch_texts():
    rb = RolloutBatch(
        prompt_ids=torch.tensor([[0, 1]]), prompt_mask=torch.tensor([[0, 1]]),
        response_ids=torch.tensor([[2, 3, 0]]), response_mask=torch.tensor([[1, 1, 0]]),
        logprobs=torch.tensor([[-0.1, -0.2, 0.0]]), finished=torch.tensor([True]),
    )
    assert rb.texts(CharTokenizer()) == ["cd"]
    assert len(rb) == 1
    assert math.isclose(float(rb.logprobs.sum()), -0.3, rel_tol=1e-6)
