"""Datasets from the Hub, read from a real Hub cache the test builds (HF_HUB_OFFLINE=1): each public shape
loads with no field mapping, through the same loaders a stage uses, with subsets, splits and slices."""
import pytest
from omegaconf import OmegaConf

from hubcache import add_repo, card, jsonl, parquet_bytes
from rlhf_cli.config.stage_grpo import PromptDataConfig
from rlhf_cli.config.stage_rm import PreferenceDataConfig
from rlhf_cli.config.stages import SFTDataConfig
from rlhf_cli.data.preference import load_preferences
from rlhf_cli.data.prompts import load_prompt_data
from rlhf_cli.data.sft import load_sft_examples
from rlhf_cli.errors import ConfigError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def conf(cls, **kw):
    return OmegaConf.structured(cls(**kw))


def decode(tok, ids):
    return tok.decode(ids)


def ultrafeedback(n=4):
    return [{"prompt": f"Question {i}?", "prompt_id": str(i), "score_chosen": 8.0, "score_rejected": 3.0,
             "chosen": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Good {i}."}],
             "rejected": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Bad {i}."}]}
            for i in range(n)]


def test_ultrafeedback_binarized_pairs_from_the_cards_configs(cache, tokenizer):
    repo = "HuggingFaceH4/ultrafeedback_binarized"
    add_repo(cache, repo, {"README.md": card({"default": {"train_prefs": "data/train_prefs-*",
                                                         "test_prefs": "data/test_prefs-*"}}),
                           "data/train_prefs-00000-of-00001.parquet": parquet_bytes(ultrafeedback(4)),
                           "data/test_prefs-00000-of-00001.parquet": parquet_bytes(ultrafeedback(2))}, "dataset")
    d = conf(PreferenceDataConfig, path=repo, split="train_prefs", eval_path=repo, eval_split="test_prefs")
    items, st = load_preferences(repo, d, tokenizer, "pairs")
    assert st.records == 4 and len(items) == 4
    chosen = decode(tokenizer, items[0].seqs[0][items[0].prompt_lens[0]:])
    assert "Good 0." in chosen and "Bad" not in chosen
    evals, st = load_preferences(repo, d, tokenizer, "pairs")  # the same loader on eval_path reads eval_split
    assert st.records == 4
    from rlhf_cli.data.readers import read_records, source_for

    assert len(list(read_records(source_for(repo, OmegaConf.merge(d, {"path": "x/unused"}))))) == 2


def test_hh_transcripts_in_a_subset_directory(cache, tokenizer):
    rows = [{"chosen": f"\n\nHuman: Hi {i}\n\nAssistant: Hello {i}", "rejected": f"\n\nHuman: Hi {i}\n\nAssistant: Go"}
            for i in range(3)]
    import gzip

    add_repo(cache, "Anthropic/hh-rlhf", {"harmless-base/train.jsonl.gz": gzip.compress(jsonl(rows).encode()),
                                          "helpful-base/train.jsonl.gz": gzip.compress(b"")}, "dataset")
    d = conf(PreferenceDataConfig, path="Anthropic/hh-rlhf", subset="harmless-base")
    items, st = load_preferences("Anthropic/hh-rlhf", d, tokenizer, "pairs")
    assert st.records == 3 and "Hello 0" in decode(tokenizer, items[0].seqs[0])
    # no subset: every folder's train file, as the datasets library reads this repo (here helpful-base is empty)
    items, st = load_preferences("Anthropic/hh-rlhf", conf(PreferenceDataConfig, path="Anthropic/hh-rlhf"),
                                 tokenizer, "pairs")
    assert st.records == 3


def test_sharegpt_capybara_and_tldr_for_sft(cache, tokenizer):
    share = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"},
                                {"from": "gpt", "value": "4"}]}]
    capybara = [{"source": "x",
                 "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}]
    tldr = [{"prompt": "SUBREDDIT: r/test POST: long text", "completion": " a summary"}]
    for repo, rows in (("anon/sharegpt", share), ("trl-lib/Capybara", capybara), ("trl-lib/tldr", tldr)):
        add_repo(cache, repo, {"data/train-00000-of-00001.parquet": parquet_bytes(rows)}, "dataset")
        examples, st = load_sft_examples(repo, conf(SFTDataConfig, path=repo), tokenizer)
        assert st.records == 1 and len(examples) == 1, repo
        ex = examples[0]
        trained = decode(tokenizer, [t for t, m in zip(ex.input_ids, ex.loss_mask) if m])
        assert {"anon/sharegpt": "4", "trl-lib/Capybara": "Yo", "trl-lib/tldr": "a summary"}[repo] in trained
        if repo == "trl-lib/tldr":  # a string pair on a chat model goes through its chat template (TRL does too)
            assert "<|im_start|>user" in decode(tokenizer, ex.input_ids)
            plain, _ = load_sft_examples(repo, conf(SFTDataConfig, path=repo, template="plain"), tokenizer)
            assert "<|im_start|>" not in decode(tokenizer, plain[0].input_ids)


def test_gsm8k_and_math_as_prompts_and_as_sft(cache, tokenizer):
    gsm = [{"question": f"What is {i} + 1?", "answer": f"{i} plus one\n#### {i + 1}"} for i in range(5)]
    math = [{"problem": "Compute 1/2 + 1/4.", "solution": r"We add: $\boxed{\frac{3}{4}}$", "level": "Level 1"}]
    add_repo(cache, "openai/gsm8k", {"main/train-00000-of-00001.parquet": parquet_bytes(gsm),
                                     "main/test-00000-of-00001.parquet": parquet_bytes(gsm[:2])}, "dataset")
    add_repo(cache, "hendrycks/math", {"train.jsonl": jsonl(math)}, "dataset")
    prompts, st = load_prompt_data("openai/gsm8k", conf(PromptDataConfig, path="openai/gsm8k", subset="main"),
                                   tokenizer)
    assert len(prompts) == 5 and prompts[0].text == "What is 0 + 1?" and prompts[0].fields["answer"].endswith("#### 1")
    test_split = conf(PromptDataConfig, path="openai/gsm8k", subset="main", split="test")
    assert len(load_prompt_data("openai/gsm8k", test_split, tokenizer)[0]) == 2
    sft, _ = load_sft_examples("openai/gsm8k", conf(SFTDataConfig, path="openai/gsm8k", subset="main"), tokenizer)
    assert len(sft) == 5
    prompts, _ = load_prompt_data("hendrycks/math", conf(PromptDataConfig, path="hendrycks/math"), tokenizer)
    assert prompts[0].text == "Compute 1/2 + 1/4." and r"\boxed" in prompts[0].fields["solution"]
    from rlhf_cli.rewards import build_reward

    reward = build_reward([{"name": "math", "answer_field": "solution"}])
    assert reward([prompts[0].text], [r"$\boxed{0.75}$"], solution=[prompts[0].fields["solution"]]).total == [1.0]


def test_kto_unpaired_with_message_lists(cache, tokenizer):
    rows = [{"prompt": [{"role": "user", "content": f"Q{i}"}],
             "completion": [{"role": "assistant", "content": f"A{i}"}],
             "label": bool(i % 2)} for i in range(4)]
    add_repo(cache, "trl-lib/kto-mix-14k", {"data/train-00000-of-00001.parquet": parquet_bytes(rows)}, "dataset")
    items, st = load_preferences("trl-lib/kto-mix-14k", conf(PreferenceDataConfig, path="trl-lib/kto-mix-14k"),
                                 tokenizer, "kto")
    assert st.records == 4 and [it.label for it in items] == [False, True, False, True]


def test_split_slices_and_errors(cache, tokenizer):
    rows = [{"text": f"line {i}"} for i in range(10)]
    add_repo(cache, "org/texts", {"train.jsonl": jsonl(rows), "validation.jsonl": jsonl(rows[:3])}, "dataset")
    for split, n in (("train[:2]", 2), ("train[5:8]", 3), ("train[:50%]", 5), ("train[-10%:]", 1), ("validation", 3)):
        examples, _ = load_sft_examples("org/texts", conf(SFTDataConfig, path="org/texts", split=split), tokenizer)
        assert len(examples) == n, split
    with pytest.raises(ConfigError, match=r"^data.path=org/texts: no data files for split 'test' in the dataset; "
                                          r"splits found: train, validation"):
        load_sft_examples("org/texts", conf(SFTDataConfig, path="org/texts", split="test"), tokenizer)
    with pytest.raises(ConfigError, match=r"^data.path=org/missing: not in the Hub cache .* and HF_HUB_OFFLINE=1"):
        load_sft_examples("org/missing", conf(SFTDataConfig, path="org/missing"), tokenizer)
    with pytest.raises(ConfigError, match="data.split=train\\[x\\]"):
        load_sft_examples("org/texts", conf(SFTDataConfig, path="org/texts", split="train[x]"), tokenizer)
