"""PPO end to end on the tiny random Llama (real tokenizer), CPU: learning, 2-process ZeRO-2/3, resume,
PPO-ptx, and a critic started from a reward model."""
import json

import pytest

from helpers import LOWERCASE_REWARD as REWARD
from helpers import TINY, interrupted_then_resumed, metrics, rlhf

pytestmark = pytest.mark.e2e


def base(prompts, out, steps=2):
    return ["train", "ppo", *TINY, f"data.path={prompts}", "data.prompt_field=prompt", "data.prompt_template=null",
            "data.reward_fields=[]", "data.max_length=64", "ppo.max_new_tokens=4", "ppo.prompts_per_step=4",
            "ppo.num_generations=2", "train.micro_batch_size=4", f"train.max_steps={steps}", "optim.lr=1e-3",
            "ppo.epochs=2", "train.save_every=0", REWARD, f"output_dir={out}"]


def test_reward_rises_while_kl_stays_bounded(prompts, tmp_path):
    """top_k=8 and 2 new tokens make each response a choice among few candidates whose lowercase share
    differs; a working PPO (critic, GAE, clipped update) must raise the reward."""
    out = tmp_path / "learn"
    rlhf(base(prompts, out, steps=24) + ["ppo.max_new_tokens=2", "ppo.top_k=8", "ppo.prompts_per_step=8",
                                         "train.micro_batch_size=8", "optim.lr=2e-2", "ppo.kl_coef=0.01",
                                         "critic.optim.lr=1e-3", "ppo.sample_every=12"], timeout=1500)
    rows = metrics(out)
    reward = {r["step"]: r["reward"] for r in rows}
    first = (reward[1] + reward[2]) / 2
    last = sum(reward[s] for s in range(19, 25)) / 6
    assert last > first + 0.1, reward
    kl = [r["kl"] for r in rows]
    assert all(abs(k) < 20 for k in kl), kl  # summed over a 2-token response
    for key in ("reward", "reward/lower", "score", "reward_shaped", "kl", "kl_coef", "entropy", "policy_loss",
                "value_loss", "clip_low_fraction", "clip_high_fraction", "value_clip_fraction", "approx_kl",
                "explained_variance", "returns_mean", "values_mean", "response_length", "missing_eos_fraction",
                "time/generation", "time/scoring", "time/update", "critic_lr", "critic_grad_norm"):
        assert key in rows[-1], key
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {12, 24} and all("response" in s and "reward" in s for s in samples)
    assert (out / "final" / "model.safetensors").exists() and (out / "critic" / "model.safetensors").exists()


def test_two_processes_zero2_and_zero3_agree(prompts, tmp_path):
    runs = {}
    for engine in ("zero2", "zero3"):
        out = tmp_path / engine
        rlhf(base(prompts, out) + [f"engine={engine}", "--nproc", "2"])
        runs[engine] = metrics(out)
        # the manifest hashes the critic as it does final/: a changed critic is a different run
        manifest = json.loads((out / "manifest.json").read_text())
        from rlhf_cli.training.runtime import sha256

        critic = manifest["exports"]["critic"]
        assert critic["model.safetensors"] == sha256(out / "critic" / "model.safetensors")
        assert {"config.json", "tokenizer.json"} <= set(critic)
        assert manifest["files"]["model.safetensors"] == sha256(out / "final" / "model.safetensors")
    for a, b in zip(runs["zero2"], runs["zero3"]):
        assert a["step"] == b["step"]
        assert a["reward"] == pytest.approx(b["reward"], rel=1e-5)
        for key in ("policy_loss", "value_loss", "kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), (key, a, b)


def test_sigterm_and_resume_match_uninterrupted(prompts, tmp_path):
    args = base(prompts, tmp_path / "unused", steps=5)[:-1] + ["ppo.kl_controller=adaptive", "ppo.target_kl=0.1",
                                                                "ppo.reward_norm=running"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    rlhf([*args, f"output_dir={full}"])
    interrupted_then_resumed(args, cut, after_steps=2)
    a, b = {r["step"]: r for r in metrics(full)}, {r["step"]: r for r in metrics(cut)}
    assert sorted(b) == list(range(1, 6))
    for s in a:  # same prompts, samples, weights, KL controller and reward statistics after resuming
        for key in ("reward", "score", "kl_coef", "policy_loss", "value_loss"):
            assert b[s][key] == pytest.approx(a[s][key], rel=1e-5, abs=1e-7), (s, key)
    ckpts = list((cut / "checkpoints").glob("step-*"))
    assert not ckpts or {p.name for p in ckpts[0].iterdir() if p.is_dir()} == {"actor", "critic"}


def test_rollout_logprobs_and_padding_free_rows_match_recomputed_padded(prompts, tmp_path):
    """The defaults on CPU (old log-probs saved by the sampler, padding-free scoring and update rows) give the
    numbers of the teacher-forced recompute over left/right-padded rows."""
    runs = {}
    for name, extra in (("default", []), ("recompute", ["ppo.old_logprobs=recompute"]),
                        ("padded", ["ppo.old_logprobs=recompute", "data.padding_free=false"])):
        rlhf(base(prompts, tmp_path / name) + extra)
        runs[name] = metrics(tmp_path / name)
    for other in ("recompute", "padded"):
        for a, b in zip(runs["default"], runs[other]):
            assert a["reward"] == b["reward"]
            for key in ("policy_loss", "value_loss", "kl", "approx_kl", "values_mean"):
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), (other, key, a[key], b[key])


def test_ptx_coef_zero_equals_no_ptx_and_ptx_mixes_in(prompts, tmp_path):
    sft = "ppo.ptx_data=builtin:gsm8k_sft.jsonl"
    plain, zero, mixed = tmp_path / "plain", tmp_path / "zero", tmp_path / "mixed"
    rlhf(base(prompts, plain))
    rlhf(base(prompts, zero) + [sft, "ppo.ptx_coef=0"])
    rlhf(base(prompts, mixed) + [sft, "ppo.ptx_coef=0.5"])
    a, b, c = metrics(plain), metrics(zero), metrics(mixed)
    for x, y in zip(a, b):
        for key in ("reward", "policy_loss", "value_loss", "kl"):
            assert x[key] == y[key], key
    assert "ptx_loss" not in b[-1] and c[-1]["ptx_loss"] > 0
    assert c[-1]["ptx_loss"] == pytest.approx(c[-1]["ptx_loss"])  # finite
    assert c[1]["reward"] != a[1]["reward"] or c[1]["policy_loss"] != a[1]["policy_loss"]


def test_critic_from_reward_model_scores_as_the_reward_model(tmp_path):
    """critic.init=reward_model: at step 0 the value head IS the reward model (same weights and pooling)."""
    import torch

    from rlhf_cli.config.compose import compose
    from rlhf_cli.models.loading import load_tokenizer
    from rlhf_cli.models.reward_model import RewardModelScorer, last_token_scores
    from rlhf_cli.stages.ppo import build_critic

    rm = tmp_path / "rm"
    rlhf(["train", "rm", *TINY, "data.path=builtin:hh_harmless_sample.jsonl", "data.limit=16",
          "train.micro_batch_size=4", "train.max_steps=2", "data.eval_fraction=0", f"output_dir={rm}"])
    cfg = compose("ppo", None, ["model=tiny", f"reward.functions=[{{name: model, path: {rm}}}]",
                                "critic.init=reward_model", f"output_dir={tmp_path / 'ppo'}"])
    critic = build_critic(cfg, load_tokenizer(cfg.model)).eval()
    scorer = RewardModelScorer(str(rm), device="cpu", dtype="fp32")
    seqs = []
    for prompt, answer in (("Say hi.", "Hello there!"), ("Name a color.", "Blue.")):
        pids, (aids,), _ = scorer.encoder.encode(prompt, [answer])
        seqs.append(pids + aids)
    expected = scorer.values(seqs)
    for ids, want in zip(seqs, expected):
        x = torch.tensor([ids])
        with torch.no_grad():
            got = last_token_scores(critic(x, torch.ones_like(x)), torch.ones_like(x))
        assert float(got) == pytest.approx(want, abs=1e-5)
    # the same rm as a reward: an ensemble of two copies reduced by min is the model itself, and
    # normalize=true applies the statistics the rm run stored in reward_config.json
    from rlhf_cli.rewards import build_reward_fn

    prompts, answers = ["Say hi.", "Name a color."], ["Hello there!", "Blue."]
    single = build_reward_fn("model", path=str(rm), device="cpu")(prompts, answers)
    assert single == pytest.approx(expected, abs=1e-5)
    ensemble = build_reward_fn("model", path=[str(rm), str(rm)], reduce="min", device="cpu")(prompts, answers)
    assert ensemble == pytest.approx(single, abs=1e-6)
    stats = json.loads((rm / "final" / "reward_config.json").read_text())
    normed = build_reward_fn("model", path=str(rm), normalize=True, device="cpu")(prompts, answers)
    assert normed == pytest.approx([(x - stats["score_mean"]) / (stats["score_std"] + 1e-8) for x in single], abs=1e-4)
