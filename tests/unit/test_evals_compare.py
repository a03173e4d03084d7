"""`rlhf eval win-rate | kl | perplexity` on tiny random models built in-process and saved as model dirs."""
import json
import math

import pytest
import torch
from tests.helpers import rlhf

from rlhf_cli.evals import get_eval

torch.set_num_threads(2)


def save_lm(tokenizer, path, seed):
    from transformers import LlamaForCausalLM

    from rlhf_cli.config.schema import TinyModelConfig
    from rlhf_cli.models.loading import save_hf_model, tiny_config

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        lm = LlamaForCausalLM(tiny_config(TinyModelConfig(seed=seed), tokenizer))
        with torch.no_grad():  # peakier distributions than the default init: the two models differ clearly
            for p in lm.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.08)
    save_hf_model(lm, None, tokenizer, path)
    return str(path)


def save_rm(tokenizer, path, seed=5):
    from transformers import AutoModelForSequenceClassification

    from rlhf_cli.config.schema import TinyModelConfig
    from rlhf_cli.models.loading import tiny_config

    cfg = tiny_config(TinyModelConfig(seed=seed), tokenizer)
    cfg.num_labels = 1
    torch.manual_seed(seed)
    hf = AutoModelForSequenceClassification.from_config(cfg)
    hf.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "reward_config.json").write_text(json.dumps({"type": "outcome", "template": "chat", "max_length": 256}))
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("models")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in
                               ["Hi", "Name a fruit.", "What is 2+2?", "Tell me a joke.", "Say yes.", "Count."]))
    return {"a": save_lm(tokenizer, root / "a", 1), "b": save_lm(tokenizer, root / "b", 2),
            "rm": save_rm(tokenizer, root / "rm"), "prompts": str(prompts), "root": root}


def test_win_rate_same_model_is_all_ties(models):
    res = get_eval("win-rate")([f"model_a={models['a']}", f"model_b={models['a']}", f"data={models['prompts']}",
                                f"rm={models['rm']}", "max_new_tokens=6"])
    assert (res["wins"], res["ties"], res["losses"]) == (0, 6, 0) and res["win_rate"] == 0.5
    assert res["ci_low"] == res["ci_high"] == 0.5


def test_win_rate_judged_by_a_model_averages_both_orders(models):
    """judge=model: identical answers are ties, exactly 0.5; for different answers P(a > b) + P(b > a) = 1,
    which holds only when each pair is judged in both presentation orders and the two averaged (a judge
    asked in one order gives p(A | a first) + p(A | b first), its position bias counted twice)."""
    common = [f"data={models['prompts']}", "judge=model", f"judge_model={models['b']}", "max_new_tokens=4",
              "limit=3", "show=3"]
    res = get_eval("win-rate")([f"model_a={models['a']}", f"model_b={models['a']}", *common])
    assert (res["wins"], res["ties"], res["losses"]) == (0, 3, 0) and res["win_rate"] == 0.5
    ab = get_eval("win-rate")([f"model_a={models['a']}", f"model_b={models['b']}", *common])["examples"]
    ba = get_eval("win-rate")([f"model_a={models['b']}", f"model_b={models['a']}", *common])["examples"]
    assert all(x["a"] != x["b"] for x in ab)  # the two models answer differently: the judge is asked
    for x, y in zip(ab, ba):
        assert x["p_a_better"] + y["p_a_better"] == pytest.approx(1.0, abs=1e-5)
    assert any(abs(x["p_a_better"] - 0.5) > 1e-3 for x in ab)


def test_win_rate_matches_the_reward_model(models):
    from rlhf_cli.models.reward_model import RewardModelScorer

    jf = models["root"] / "judgements.jsonl"
    res = get_eval("win-rate")([f"model_a={models['a']}", f"model_b={models['b']}", f"data={models['prompts']}",
                                f"rm={models['rm']}", "max_new_tokens=6", f"judgements={jf}", "show=2"])
    recs = [json.loads(x) for x in jf.read_text().splitlines()]
    sc = RewardModelScorer(models["rm"])
    ra = sc.score([r["prompt"] for r in recs], [r["response_a"] for r in recs])
    rb = sc.score([r["prompt"] for r in recs], [r["response_b"] for r in recs])
    expect = ["a" if x > y else "b" if y > x else "tie" for x, y in zip(ra, rb)]
    assert [r["winner"] for r in recs] == expect
    assert res["wins"] == expect.count("a") and res["losses"] == expect.count("b")
    assert res["win_rate"] == pytest.approx((expect.count("a") + 0.5 * expect.count("tie")) / 6)
    assert res["ci_low"] <= res["win_rate"] <= res["ci_high"]
    assert res["reward_a_mean"] == pytest.approx(sum(ra) / 6, rel=1e-4) and len(res["examples"]) == 2
    elo = json.loads(rlhf(["elo", str(jf), "bootstrap=10", "--json"]).stdout)
    assert {r["model"] for r in elo["ratings"]} == {models["a"], models["b"]}


def test_kl_zero_for_identical_models(models):
    res = get_eval("kl")([f"model={models['a']}", f"ref={models['a']}", f"data={models['prompts']}",
                          "samples=2", "max_new_tokens=5"])
    assert res["samples"] == 12 and res["kl"] == 0 and res["kl_full"] == 0 and res["kl_k3"] == 0


def test_kl_one_token_equals_exact_kl(models, tokenizer):
    """With one new token the sequence KL is KL(pi(.|x) || ref(.|x)) at the prompt's last position: the exact
    estimator must equal it on every sample, and the sampled k1 mean must agree within its error."""
    from rlhf_cli.data.prompts import encode_prompt
    from rlhf_cli.models.loading import load_for_generation

    one = models["root"] / "one.jsonl"
    one.write_text(json.dumps({"prompt": "Name a fruit."}) + "\n")
    res = get_eval("kl")([f"model={models['a']}", f"ref={models['b']}", f"data={one}", "samples=400",
                          "max_new_tokens=1", "batch_size=100"])
    pa, tok = load_for_generation(models["a"])
    pb, _ = load_for_generation(models["b"])
    ids = torch.tensor([encode_prompt(tok, [{"role": "user", "content": "Name a fruit."}])])
    with torch.no_grad():
        la = torch.log_softmax(pa(ids).logits[0, -1].float(), -1)
        lb = torch.log_softmax(pb(ids).logits[0, -1].float(), -1)
    exact = float((la.exp() * (la - lb)).sum())
    assert exact > 0.05
    assert res["kl_full"] == pytest.approx(exact, rel=1e-4)
    assert abs(res["kl"] - exact) < 4 * res["kl_stderr"] + 1e-3
    assert res["response_length"] == 1 and res["kl_per_token"] == pytest.approx(res["kl"])


def test_perplexity_by_hand(models, tokenizer):
    import torch.nn.functional as F

    from rlhf_cli.data.chat import tokenize_chat
    from rlhf_cli.models.loading import load_for_generation

    data = models["root"] / "heldout.jsonl"
    recs = [{"text": "The cat sat on the mat."},
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, friend."}]},
            {"prompt": "2+2=", "completion": "4"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = models["root"] / "ppl.json"
    res = json.loads(rlhf(["eval", "perplexity", f"model={models['a']}", f"data={data}", "batch_size=2",
                           f"out={out}"]).stdout)
    assert json.loads(out.read_text()) == res
    lm, tok = load_for_generation(models["a"])
    eos = [tok.eos_token_id]
    rows = [(tok("The cat sat on the mat.", add_special_tokens=False)["input_ids"] + eos, None),
            tokenize_chat(tok, recs[1]["messages"])]
    # template=auto: a string prompt/completion is a user/assistant exchange in the chat template
    rows.append(tokenize_chat(tok, [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]))
    total = n = 0
    with torch.no_grad():
        for ids, mask in rows:
            mask = mask or [1] * len(ids)
            logits = lm(torch.tensor([ids])).logits[0, :-1].float()
            nll = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
            m = torch.tensor(mask[1:], dtype=torch.bool)
            total += float(nll[m].sum())
            n += int(m.sum())
    assert res["tokens"] == n and res["examples"] == 3
    assert res["perplexity"] == pytest.approx(math.exp(total / n), rel=1e-4)
    assert res["bits_per_token"] == pytest.approx(total / n / math.log(2), rel=1e-4)
    plain = json.loads(rlhf(["eval", "perplexity", f"model={models['a']}", f"data={data}", "template=plain"]).stdout)
    c = tok("4", add_special_tokens=False)["input_ids"] + eos
    assert plain["tokens"] == n - int(sum(rows[2][1][1:])) + len(c)  # the completion text + EOS only
