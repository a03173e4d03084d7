"""Padding-free batches (every sequence of a micro-batch end to end in one row) and the ``sdpa_varlen``
attention: the same logits, log-probs, scores, losses and gradients as padded rows, with no padding."""
import pytest
import torch

from rlhf_cli.data.packing import IGNORE, build_rows, collate, collate_flat, pack_examples
from rlhf_cli.data.preference import PrefItem
from rlhf_cli.data.preference_batch import collate_preferences
from rlhf_cli.data.sft import Example
from rlhf_cli.models.attention import NAME as VARLEN
from rlhf_cli.models.forward import label_logprobs, lm_logits


def tiny_llama(attn=VARLEN, vocab=64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg)


def examples(lens=(7, 12, 5, 9, 3)):
    g = torch.Generator().manual_seed(1)
    return [Example(torch.randint(2, 64, (n,), generator=g).tolist(), [0] * 2 + [1] * (n - 2)) for n in lens]


def test_flat_batch_has_no_padding_and_keeps_examples_apart():
    rows = pack_examples(examples(), max_length=16)
    b = collate_flat(rows)
    assert b.input_ids.shape == (1, 36) and b.num_pad == 0 and b.attention_mask is None
    assert b.num_loss_tokens == sum(n - 2 for n in (7, 12, 5, 9, 3))
    restarts = (b.position_ids[0] == 0).nonzero().flatten().tolist()
    assert len(restarts) == 5 and all(int(b.labels[0, r - 1]) == IGNORE for r in restarts[1:])


def test_varlen_attention_equals_each_example_alone_and_stock_sdpa():
    model = tiny_llama().eval()
    stock = tiny_llama("sdpa").eval()  # same seed: same weights; block-diagonal mask path
    exs = examples()
    b = collate_flat(build_rows(exs, 64, packing=False))
    with torch.no_grad():
        flat = lm_logits(model, b.input_ids, b.position_ids)[0]
        ref = lm_logits(stock, b.input_ids, b.position_ids)[0]
        start = 0
        for ex in exs:
            n = len(ex.input_ids)
            alone = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            torch.testing.assert_close(flat[start:start + n], alone, atol=1e-5, rtol=1e-5)
            start += n
    torch.testing.assert_close(flat, ref, atol=1e-5, rtol=1e-5)


def test_varlen_attention_leaves_padded_batches_and_generation_unchanged():
    model, stock = tiny_llama().eval(), tiny_llama("sdpa").eval()
    rows = build_rows(examples(), 64, packing=False)
    b = collate(rows, pad_id=0, packed=False)
    with torch.no_grad():
        torch.testing.assert_close(lm_logits(model, b.input_ids, b.position_ids, b.attention_mask),
                                   lm_logits(stock, b.input_ids, b.position_ids, b.attention_mask))
        ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
        mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])  # left padding, as in generation
        kw = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert model.generate(ids, **kw).tolist() == stock.generate(ids, **kw).tolist()


def test_flat_sft_loss_and_grads_equal_padded():
    rows = build_rows(examples(), 64, packing=False)
    model = tiny_llama()
    padded = collate(rows, pad_id=0, packed=False)
    logits = lm_logits(model, padded.input_ids, padded.position_ids, padded.attention_mask)
    from rlhf_cli.algos.logprobs import token_logprobs

    loss_padded = -token_logprobs(logits, padded.labels).sum()
    loss_padded.backward()
    g_padded = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    flat = collate_flat(rows)
    logps, keep = label_logprobs(model, flat.input_ids, flat.position_ids, flat.labels)
    assert keep.numel() == flat.num_loss_tokens  # the LM head ran on loss positions only
    loss_flat = -logps.sum()
    loss_flat.backward()
    torch.testing.assert_close(loss_flat, loss_padded, atol=1e-4, rtol=1e-5)
    for a, p in zip(g_padded, model.parameters()):
        torch.testing.assert_close(p.grad, a, atol=1e-5, rtol=1e-4)


def pref_items():
    g = torch.Generator().manual_seed(2)
    ids = lambda n: torch.randint(2, 64, (n,), generator=g).tolist()  # noqa: E731
    items = []
    for p, a, r in [(4, 3, 6), (2, 5, 1), (6, 2, 2)]:
        prompt = ids(p)
        items.append(PrefItem(seqs=[prompt + ids(a), prompt + ids(r)], prompt_lens=[p, p], ranks=[0, 1]))
    return items


def test_flat_preference_batch_gives_the_padded_logps_and_last_token_values():
    from rlhf_cli.stages.dpo import sequence_logps
    from rlhf_cli.stages.rm import sequence_scores

    model = tiny_llama().eval()
    items = pref_items()
    padded, flat = collate_preferences(items, 0), collate_preferences(items, 0, padding_free=True)
    assert flat.num_pad == 0 and flat.num_tokens == padded.num_tokens and flat.num_sequences == 6
    with torch.no_grad():
        lp, n = sequence_logps(model, padded, 1024)
        lf, nf = sequence_logps(model, flat, 1024)
    torch.testing.assert_close(lf, lp, atol=1e-4, rtol=1e-5)
    assert nf.tolist() == n.tolist() == [3, 5, 2, 6, 1, 2]
    vals_p = torch.arange(padded.input_ids.numel(), dtype=torch.float).view_as(padded.input_ids)
    last_p = sequence_scores(vals_p, padded)
    lens = padded.attention_mask.sum(1)
    assert last_p.tolist() == [float(r * padded.input_ids.shape[1] + lens[r] - 1) for r in range(6)]
    vals_f = torch.arange(flat.input_ids.numel(), dtype=torch.float).unsqueeze(0)
    assert sequence_scores(vals_f, flat).tolist() == (lens.cumsum(0) - 1).float().tolist()


@pytest.mark.parametrize("free", [False, True])
def test_process_step_positions_point_at_the_same_tokens(free):
    items = pref_items()[:2]
    for it in items:
        it.step_ends, it.step_labels = [len(it.seqs[0]) - 2, len(it.seqs[0]) - 1], [1.0, 0.0]
    b = collate_preferences(items, 0, padding_free=free)
    picked = b.input_ids[b.step_rows, b.step_cols].tolist()
    assert picked == [items[0].seqs[0][-2], items[0].seqs[0][-1], items[1].seqs[0][-2], items[1].seqs[0][-1]]


def rl_experience(padding_free: bool):
    """Four samples with prompts of 3-9 tokens and responses of 1-7 tokens, one unfinished and loss-masked
    (so both left and right padding appear in the padded layout)."""
    from rlhf_cli.rl.experience import Sample, build_experience

    g = torch.Generator().manual_seed(3)
    shapes = [(9, 4, True), (3, 7, False), (6, 1, True), (5, 5, True)]
    samples = [Sample(torch.randint(2, 64, (p,), generator=g).tolist(),
                      torch.randint(2, 64, (r,), generator=g).tolist(), fin) for p, r, fin in shapes]
    return build_experience(samples, torch.zeros(4), pad_id=0, mask_truncated=True, device="cpu",
                            padding_free=padding_free)


def test_rl_flat_logprobs_entropy_values_and_grads_equal_padded():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from rlhf_cli.models.reward_model import ScalarRewardModel
    from rlhf_cli.rl.experience import flat_inputs, response_logprobs, response_values

    padded, flat = rl_experience(False), rl_experience(True)
    row = flat_inputs(flat)
    assert row.input_ids.shape == (1, (9 + 4) + (3 + 7) + (6 + 1) + (5 + 5)) and row.pred.numel() == 17
    model = tiny_llama()
    out = {}
    for name, exp in (("padded", padded), ("flat", flat)):
        model.zero_grad()
        logps, ent = response_logprobs(model, exp, 0.7, 4, with_entropy=True, entropy_grad=True)
        m = exp.response_mask
        ((logps * m).sum() + 0.1 * (ent * m).sum()).backward()
        out[name] = (logps.detach() * m, ent.detach() * m, [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(out["flat"][0], out["padded"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["flat"][1], out["padded"][1], atol=1e-5, rtol=1e-5)
    for a, b in zip(out["flat"][2], out["padded"][2]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert out["flat"][0][1].abs().sum() == 0  # the unfinished, masked response stays out of the loss

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, num_labels=1, pad_token_id=0)
    cfg._attn_implementation = VARLEN
    critic = ScalarRewardModel(LlamaForSequenceClassification(cfg)).eval()
    with torch.no_grad():
        real = (torch.arange(padded.response_ids.size(1))[None] < padded.response_lengths[:, None]).float()
        torch.testing.assert_close(response_values(critic, flat) * real, response_values(critic, padded) * real,
                                   atol=1e-5, rtol=1e-5)



def test_reward_scorer_scores_padding_free_as_each_sequence_alone():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from rlhf_cli.models.reward_model import RewardModelScorer, ScalarRewardModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, num_labels=1, pad_token_id=0)
    cfg._attn_implementation = VARLEN
    scorer = object.__new__(RewardModelScorer)  # the scoring loop alone, without a saved model dir
    scorer.model = ScalarRewardModel(LlamaForSequenceClassification(cfg)).eval()
    scorer.device, scorer.batch_size = "cpu", 2
    g = torch.Generator().manual_seed(5)
    seqs = [torch.randint(1, 64, (n,), generator=g).tolist() for n in (6, 11, 2, 8, 4)]
    with torch.no_grad():
        alone = [scorer.model(torch.tensor([x]), None)[0] for x in seqs]
    assert scorer.values(seqs) == pytest.approx([float(v[-1]) for v in alone], abs=1e-5)
    steps = [[1, len(x) - 1] for x in seqs]
    got = scorer.values(seqs, steps)
    assert all(g_ == pytest.approx([float(v[p]) for p in st], abs=1e-5) for g_, v, st in zip(got, alone, steps))
