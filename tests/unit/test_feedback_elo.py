"""`rlhf elo`: BT/PL fit against known strengths and hand-derived numbers, online Elo, agreement, CLI."""
import json
import math

import numpy as np
import pytest
import torch
from tests.helpers import rlhf

from rlhf_cli.errors import DataError
from rlhf_cli.feedback.agreement import agreement, cohen_kappa, fleiss_kappa
from rlhf_cli.feedback.elo import _nll_grad, build_terms, fit_strengths, online_elo, rate
from rlhf_cli.feedback.judgements import Judgement, parse_judgement, read_judgements

TRUE = {"m0": 1.0, "m1": 0.4, "m2": 0.0, "m3": -1.4}  # natural-log strengths


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def synthetic_pairs(n, seed=0):
    rng = np.random.default_rng(seed)
    names = list(TRUE)
    out = []
    for _ in range(n):
        a, b = rng.choice(4, size=2, replace=False)
        a, b = names[a], names[b]
        win = rng.random() < sigmoid(TRUE[a] - TRUE[b])
        out.append({"model_a": a, "model_b": b, "winner": "a" if win else "b"})
    return out


def synthetic_rankings(n, k=3, seed=1):
    """Plackett-Luce samples: pick the best among the rest in proportion to exp(theta)."""
    rng = np.random.default_rng(seed)
    names = list(TRUE)
    out = []
    for _ in range(n):
        rest = list(rng.choice(4, size=k, replace=False))
        order = []
        while rest:
            w = np.exp([TRUE[names[i]] for i in rest])
            pick = rng.choice(len(rest), p=w / w.sum())
            order.append(rest.pop(pick))
        out.append(Judgement([names[i] for i in order], list(range(k))))
    return out


def centred(d):
    mean = sum(d.values()) / len(d)
    return {k: v - mean for k, v in d.items()}


def elo_of(theta):  # natural-log strength -> Elo scale
    return 400 * theta / math.log(10)


def test_bt_recovers_known_strengths():
    js = [parse_judgement(r) for r in synthetic_pairs(6000)]
    res = rate(js, rounds=50, reg=0.0)
    got = {r["model"]: r["bt"] for r in res["ratings"]}
    assert [r["model"] for r in res["ratings"]] == ["m0", "m1", "m2", "m3"]
    assert abs(sum(got.values()) / 4 - 1000) < 0.02  # rounded to 0.01
    for m, t in centred(TRUE).items():
        assert abs(got[m] - (1000 + elo_of(t))) < 25, (m, got[m], 1000 + elo_of(t))
    for r in res["ratings"]:
        assert r["ci_low"] < r["bt"] < r["ci_high"]
        assert r["ci_low"] - 10 < 1000 + elo_of(centred(TRUE)[r["model"]]) < r["ci_high"] + 10
    assert res["ratings"][0]["battles"] == sum(1 for j in js if "m0" in j.models)


def test_bt_matches_choix():
    choix = pytest.importorskip("choix")
    js = [parse_judgement(r) for r in synthetic_pairs(800, seed=3)]
    models = sorted(TRUE)
    terms = build_terms(js, models)
    ours = fit_strengths(terms, 4, reg=0.0)
    data = [(models.index(j.models[0]), models.index(j.models[1])) if j.ranks[0] < j.ranks[1]
            else (models.index(j.models[1]), models.index(j.models[0])) for j in js]
    ref = choix.ilsr_pairwise(4, data, alpha=0.0, tol=1e-12)
    np.testing.assert_allclose(ours, ref - ref.mean(), atol=1e-4)


def test_tie_is_half_win_by_hand():
    # A beats B once and ties once: A scores 1.5 of 2 -> sigma(d) = 3/4 -> d = ln 3 -> 400 log10(3) Elo
    js = [parse_judgement({"winner": "A", "loser": "B"}), parse_judgement({"winner": "A", "loser": "B", "tie": True})]
    res = rate(js, rounds=0, reg=0.0)
    bt = {r["model"]: r["bt"] for r in res["ratings"]}
    assert bt["A"] == pytest.approx(1000 + 200 * math.log10(3), abs=0.01)
    assert bt["B"] == pytest.approx(1000 - 200 * math.log10(3), abs=0.01)
    a = res["ratings"][0]
    assert (a["wins"], a["ties"], a["losses"], a["battles"]) == (1, 1, 0, 2)
    assert res["win_rate"]["A"]["B"] == 0.75


def test_online_elo_by_hand():
    js = [Judgement(["A", "B"], [0, 1]), Judgement(["A", "B"], [0, 0])]
    r = online_elo(js, ["A", "B"], k=4)
    # battle 1: E=0.5 -> A 1002, B 998; battle 2 (tie): E_A = 1/(1+10^(-4/400)) -> A loses K*(0.5-E_A)
    e = 1 / (1 + 10 ** (-4 / 400))
    assert r["A"] == pytest.approx(1002 + 4 * (0.5 - e))
    assert r["B"] == pytest.approx(998 - 4 * (0.5 - e))
    r32 = online_elo(js[:1], ["A", "B"], k=32, scale=400, base=10, init=1500)
    assert r32 == {"A": 1516, "B": 1484}


def test_pl_likelihood_matches_rm_loss_with_ties():
    from rlhf_cli.algos.reward_model import plackett_luce

    models = ["a", "b", "c", "d"]
    js = [Judgement(["a", "b", "c", "d"], [0, 1, 1, 2]), Judgement(["d", "c", "a"], [0, 1, 2]),
          Judgement(["b", "a", "c"], [0, 0, 1])]
    theta = np.array([0.3, -0.2, 0.5, -0.6])
    terms = build_terms(js, models)
    nll, grad = _nll_grad(theta, terms, terms.weight, reg=0.0)
    ref = 0.0
    for j in js:
        s = torch.tensor([[theta[models.index(m)] for m in j.models]])
        ref += float(plackett_luce(s, torch.tensor([j.ranks]), torch.ones_like(s, dtype=torch.bool)).sum())
    assert nll == pytest.approx(ref, rel=1e-10)
    eps = 1e-6
    for i in range(4):
        d = np.zeros(4)
        d[i] = eps
        fd = (_nll_grad(theta + d, terms, terms.weight, 0.0)[0] - _nll_grad(theta - d, terms, terms.weight, 0.0)[0])
        assert grad[i] == pytest.approx(fd / (2 * eps), abs=1e-6)


def test_pl_rankings_recover_strengths():
    js = synthetic_rankings(3000)
    res = rate(js, rounds=0, reg=0.0)
    got = {r["model"]: r["bt"] for r in res["ratings"]}
    assert [r["model"] for r in res["ratings"]] == ["m0", "m1", "m2", "m3"]
    for m, t in centred(TRUE).items():
        assert abs(got[m] - (1000 + elo_of(t))) < 30


def test_agreement_by_hand():
    a = ["first", "first", "second", "tie"]
    b = ["first", "second", "second", "tie"]
    assert cohen_kappa(a, b) == pytest.approx((0.75 - 0.3125) / 0.6875)
    counts = [{"first": 2}, {"first": 1, "second": 1}, {"second": 2}, {"tie": 2}]
    assert fleiss_kappa(counts) == pytest.approx((0.75 - 22 / 64) / (1 - 22 / 64))
    # the same through judgements: 4 prompts, two annotators, pairs shown in either order
    js = []
    for p, (la, lb) in enumerate(zip(a, b)):
        for ann, lab in (("ann", la), ("bob", lb)):
            ranks = {"first": [0, 1], "second": [1, 0], "tie": [0, 0]}[lab]
            rec = {"prompt": f"p{p}", "responses": ["x", "y"], "ranks": ranks, "models": ["s", "d"],
                   "annotator": ann}
            if ann == "bob":  # shown swapped: the label must not depend on the display order
                rec.update(responses=["y", "x"], ranks=ranks[::-1], models=["d", "s"])
            js.append(parse_judgement(rec))
    ag = agreement(js)
    assert ag["units"] == 4 and ag["pairwise_agreement"] == 0.75
    assert ag["cohen_kappa_mean"] == pytest.approx((0.75 - 0.3125) / 0.6875)
    assert ag["fleiss_kappa"] == pytest.approx((0.75 - 22 / 64) / (1 - 22 / 64))
    assert agreement(js[::2]) is None  # one annotator: nothing to agree on


def test_formats_and_errors(tmp_path):
    f = tmp_path / "j.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 0, 1], "models": ["x", "y", "x"]},
        {"winner": "x", "loser": "z"},
        {"model_a": "y", "model_b": "z", "winner": "tie (bothbad)"},
        {"prompt": "p", "chosen": "a", "rejected": "b", "judge_prob": 0.8, "principle": "be kind",
         "model_chosen": "z", "model_rejected": "x"},
    ]) + "\n")
    with open(f, "a") as fh:  # lines of rlhf label's skipped file
        fh.write(json.dumps({"prompt": "q", "responses": ["a", "b"], "models": ["x", "y"], "verdict": "skip"}) + "\n")
        fh.write(json.dumps({"prompt": "q", "responses": ["a", "b"], "models": ["y", "z"], "verdict": "all_bad"})
                 + "\n")
    js = read_judgements([str(f)], soft=True)
    assert js.pop().ranks == [0, 0] and len(js) == 4
    assert [j.models for j in js] == [["x", "y", "x"], ["x", "z"], ["y", "z"], ["z", "x"]]
    assert js[1].ranks == [0, 1] and js[2].ranks == [0, 0] and js[3].p_first == 0.8
    res = rate(js, rounds=20)
    y = next(r for r in res["ratings"] if r["model"] == "y")
    assert y["battles"] == 3 and y["wins"] == 2 and y["ties"] == 1  # same-model pair x-x is no battle
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"winner": "x", "loser": "y"}) + "\n" +
                   json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "judge_prob": 0.9}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: .*model_chosen"):
        read_judgements([str(bad)])


def test_cli_json_and_table(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in synthetic_pairs(400, seed=5)) + "\n")
    out = json.loads(rlhf(["elo", str(f), "bootstrap=30", "--json"]).stdout)
    bts = [r["bt"] for r in out["ratings"]]
    assert bts == sorted(bts, reverse=True) and out["ratings"][0]["model"] == "m0"
    assert set(out["ratings"][0]) >= {"model", "bt", "ci_low", "ci_high", "elo", "battles"}
    table = rlhf(["elo", str(f), "bootstrap=10"]).stdout
    assert "m0" in table and "win rate" in table
    bad = rlhf(["elo", str(f), "bootsrap=3"], check=False)
    assert bad.returncode == 2 and "bootstrap" in bad.stderr and "Traceback" not in bad.stderr
