"""The arithmetic of the benchmarks' reports (the runs themselves are `make bench`, never tests)."""
import time

import pytest

from rlhf_cli.bench.ppo import N_HEAD_135M, scoring_update_flops
from rlhf_cli.bench.sft import N_PARAMS_135M
from rlhf_cli.bench.vs import compare_steps, compare_tokens, plan


def test_ppo_floor_counts_three_forwards_and_two_trained_models():
    body = N_PARAMS_135M - N_HEAD_135M
    # 2 prompts of 10 tokens with 5-token responses: 30 tokens, 10 of them response tokens
    scoring = 3 * 2 * body * 30 + 2 * N_HEAD_135M * 10
    update = 2 * 6 * body * 30 + 6 * N_HEAD_135M * 10
    assert scoring_update_flops(2, 10, 5, epochs=1) == pytest.approx(scoring + update)
    assert scoring_update_flops(2, 10, 5, epochs=3) == pytest.approx(scoring + 3 * update)


def test_vs_rows_take_each_sides_best_round():
    mine = [{"tokens_per_s": 100.0, "padding_fraction": 0.0, "peak_gflops": 160.0},
            {"tokens_per_s": 120.0, "padding_fraction": 0.0, "peak_gflops": 150.0}]
    row = compare_tokens(mine, {"packed": [{"tokens_per_s": 80.0}], "padded": [{"tokens_per_s": 60.0},
                                                                                {"tokens_per_s": 96.0}]})
    assert row["ratio_vs_trl_fastest"] == pytest.approx(120 / 96, abs=1e-3)
    assert row["ours_fraction_of_matmul_peak"] == pytest.approx(6 * N_PARAMS_135M * 120 / 1e9 / 150, abs=1e-3)
    assert "ours_fraction_of_sustained_matmul" not in row
    mine[1]["sustained_gflops"] = 125.0
    row = compare_tokens(mine, {"packed": [{"tokens_per_s": 80.0}]})
    assert row["ours_fraction_of_sustained_matmul"] == pytest.approx(6 * N_PARAMS_135M * 120 / 1e9 / 125, abs=1e-3)
    assert row["ours_fraction_of_matmul_peak"] == pytest.approx(6 * N_PARAMS_135M * 120 / 1e9 / 150, abs=1e-3)
    step = compare_steps([{"step_time": 30.0, "generated_tokens_per_step": 500},
                          {"step_time": 20.0, "generated_tokens_per_step": 510}],
                         {"": [{"step_time": 40.0, "generated_tokens_per_step": 490}]})
    assert step["ratio_vs_trl_fastest"] == 2.0 and step["ours_generated_tokens_per_step"] == 510


def test_grpo_comparison_plans_the_same_batch_for_both_sides():
    [(label, ours, [(mode, theirs)])] = plan("grpo", {"generations": "8"})
    assert label == "grpo step" and ours["generations"] == 8 and ours["prompts"] == 2
    assert {k: v for k, v in theirs.items() if k != "gc"} == ours and theirs["gc"] is False


def test_data_sets_and_trl_checkpointing_options():
    """data= gives both sides the same records (ours as a jsonl file, TRL's as conversational rows);
    trl_gc=both runs each TRL mode with and without activation checkpointing."""
    import json

    from rlhf_cli.bench.data import trl_records, write
    from rlhf_cli.errors import ConfigError

    [(label, ours, modes)] = plan("rm", {"data": "gsm8k", "trl_gc": "both"})
    assert label == "rm gsm8k seq 512" and [m for m, _ in modes] == ["", "gc"]
    assert [kw["gc"] for _, kw in modes] == [False, True] and all(kw["data"] == "gsm8k" for _, kw in modes)
    [(_, _, sft_modes)] = plan("sft", {"data": "hh"})
    assert [m for m, _ in sft_modes] == ["packed", "padded"]
    with pytest.raises(ConfigError, match="data=ultra: must be one of hh, gsm8k"):
        plan("dpo", {"data": "ultra"})
    with pytest.raises(ConfigError, match="trl_gc=maybe"):
        plan("dpo", {"trl_gc": "maybe"})
    for stage, data in (("dpo", "gsm8k"), ("dpo", "hh"), ("sft", "hh"), ("sft", "gsm8k")):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            mine = [json.loads(x) for x in write(stage, data, 8, tmp).read_text().splitlines()]
        theirs = trl_records(stage, data, 8)
        assert len(mine) == len(theirs) == 8
        for a, b in zip(mine, theirs):
            assert a["prompt"] == b["prompt"] and a["prompt"][-1]["role"] == "user"
            if stage == "dpo":
                assert b["chosen"] == [{"role": "assistant", "content": a["chosen"]}] and a["chosen"] != a["rejected"]
            else:
                assert a["completion"] == b["completion"]


def test_training_rows_measure_after_the_same_warmup_on_both_sides():
    from rlhf_cli.bench.sft import WARMUP_STEPS
    from rlhf_cli.errors import ConfigError

    [(label, ours, [(mode, theirs), _])] = plan("sft", {})
    assert ours["warmup"] == theirs["warmup"] == WARMUP_STEPS and ours["steps"] > WARMUP_STEPS
    [_, (_, live, [(_, trl_live)])] = plan("dpo", {"warmup": "1", "steps": "3"})
    assert live["warmup"] == trl_live["warmup"] == 1 and live["precompute"] is False
    with pytest.raises(ConfigError, match="steps=3 leaves nothing to measure after warmup=3"):
        plan("rm", {"steps": "3"})


def test_trl_step_meter_drops_its_warmup_steps():
    import torch

    from rlhf_cli.bench.peer_trl import StepMeter

    meter = StepMeter(torch.nn.Linear(2, 2))
    meter.steps = [(10.0, 100), (4.0, 400), (2.0, 300), (3.0, 300)]  # (seconds, tokens) per step
    assert meter.result(warmup=2) == {"tokens_per_s": 120.0, "step_time": 2.5}
    assert meter.result(warmup=1)["tokens_per_s"] == pytest.approx(1000 / 9, abs=0.1)


def test_steal_fraction_is_the_share_of_cpu_time_given_to_neighbours():
    from rlhf_cli.bench.peak import cpu_times, steal_fraction

    assert steal_fraction((10, 100), (15, 200)) == 0.05
    assert steal_fraction((0, 0), (0, 0)) == 0.0
    steal, total = cpu_times()
    assert 0 <= steal <= total


def test_sustained_matmul_rate_is_a_mean_over_the_window():
    from rlhf_cli.bench.peak import sustained_matmul_gflops

    t = time.perf_counter()
    rate = sustained_matmul_gflops(seconds=0.2, n=256)
    assert time.perf_counter() - t >= 0.2 and rate > 0
