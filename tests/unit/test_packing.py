"""Packing keeps examples separate: same logits as running each alone; labels never cross examples;
the rows of a step do not depend on how the step is split."""
import torch

from rlhf_cli.data.packing import IGNORE, build_rows, collate, pack_examples, step_micro_batches
from rlhf_cli.data.sft import Example
from rlhf_cli.models.forward import lm_logits


def tiny_llama(vocab=64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).eval()  # use_cache stays on (the default): lm_logits must cope


def examples():
    g = torch.Generator().manual_seed(1)
    lens = [7, 12, 5, 9, 3]
    return [Example(torch.randint(1, 64, (n,), generator=g).tolist(), [0] * 2 + [1] * (n - 2)) for n in lens]


def test_bin_packing_fits_and_keeps_every_token():
    exs = examples()
    rows = pack_examples(exs, max_length=16)
    assert all(len(r) <= 16 for r in rows)
    assert sum(len(r) for r in rows) == sum(len(e.input_ids) for e in exs)
    assert len(rows) == 3  # 36 tokens need >= 3 rows of 16; best-fit achieves it


def test_packed_logits_equal_unpacked_and_labels_stay_inside_examples():
    model = tiny_llama()
    exs = examples()
    rows = pack_examples(exs, max_length=24)
    batch = collate(rows, pad_id=0, packed=True)
    with torch.no_grad():
        packed = lm_logits(model, batch.input_ids, batch.position_ids)  # the training forward
    for b, row in enumerate(rows):
        start = 0
        for pos_end in [i for i in range(1, len(row) + 1) if i == len(row) or row.position_ids[i] == 0]:
            seg = row.input_ids[start:pos_end]
            with torch.no_grad():
                alone = model(input_ids=torch.tensor([seg])).logits[0]
            assert torch.allclose(packed[b, start:pos_end], alone, atol=1e-5), "packed example attended across"
            assert row.labels[pos_end - 1] == IGNORE  # last token of an example predicts nothing
            start = pos_end


def test_padded_mode_and_padding_fraction():
    exs = examples()
    rows = build_rows(exs, max_length=32, packing=False)
    batch = collate(rows[:2], pad_id=0, packed=False)
    assert batch.attention_mask is not None
    assert batch.num_pad == 12 - 7
    assert batch.num_loss_tokens == (7 - 2) + (12 - 2)


def test_step_rows_independent_of_split():
    from omegaconf import OmegaConf

    from rlhf_cli.training.supervised import rows_for_step

    rows = [[0] * n for n in range(3, 43)]  # 40 rows of distinct lengths
    cfg = OmegaConf.create({"seed": 3, "data": {"shuffle": True}})
    for step in (0, 1, 7):
        seen = {}
        for micro, accum, world in [(2, 2, 1), (4, 1, 1), (2, 1, 2), (1, 2, 2)]:
            ids = rows_for_step(cfg, len(rows), micro * accum * world, step)
            got = []
            for rank in range(world):
                mbs = step_micro_batches(rows, ids, micro, world, rank)
                assert len(mbs) == accum and all(len(m) == micro for m in mbs)
                got += [len(r) for m in mbs for r in m]
            seen[(micro, accum, world)] = sorted(got)
        assert len(set(map(tuple, seen.values()))) == 1, seen
    # different epochs see different orders (shuffle on), same seed reproduces
    assert rows_for_step(cfg, 40, 4, 0) == rows_for_step(cfg, 40, 4, 0)
    assert rows_for_step(cfg, 40, 4, 0) != rows_for_step(cfg, 40, 4, 10)
