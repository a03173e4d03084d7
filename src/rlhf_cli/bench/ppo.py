"""One PPO step of SmolLM2-135M (actor, critic, reference and reward model all 135M) through the real stage,
one process: generation tokens/s, the time split generate / score (reward + reference + critic) / train,
step time and peak memory."""
from __future__ import annotations

import tempfile

from rlhf_cli.bench.peak import peak_rss_mb


def make_reward_model(directory: str) -> str:
    """A 135M reward model dir (the embedded model's backbone with a seeded head) for the benchmark."""
    import json

    from rlhf_cli.config.compose import compose
    from rlhf_cli.models.embedded import prepare_model
    from rlhf_cli.models.loading import load_tokenizer
    from rlhf_cli.models.reward import REWARD_CONFIG, build_reward_model

    cfg = compose("rm", None, ["model=smollm2-135m", f"output_dir={directory}/unused"])
    prepare_model(cfg)
    tok = load_tokenizer(cfg.model)
    rm = build_reward_model(cfg.model, tok, seed=0)
    rm.save_pretrained(directory)
    tok.save_pretrained(directory)
    with open(f"{directory}/{REWARD_CONFIG}", "w") as f:
        json.dump({"type": "outcome", "score_position": "last_token", "template": "chat", "max_length": 512}, f)
    return directory


def run(peak_gflops: float, opts: dict) -> dict:
    from rlhf_cli.bench.sft import run_training_bench

    P, T = int(opts.get("prompts", 8)), int(opts.get("tokens", 128))
    epochs = int(opts.get("epochs", 1))
    with tempfile.TemporaryDirectory() as rm_dir:
        make_reward_model(rm_dir)
        rows = run_training_bench("ppo", ["model=smollm2-135m", "engine=zero0", f"ppo.prompts_per_step={P}",
                                          "ppo.num_generations=1", f"ppo.max_new_tokens={T}", f"ppo.epochs={epochs}",
                                          f"train.micro_batch_size={P}", "data.limit=64", "critic.init=reward_model",
                                          f"reward.functions=[{{name: model, path: {rm_dir}}}]"],
                                  int(opts.get("steps", 2)), key="policy_loss")
    keys = ("time/generation", "time/scoring", "time/update", "step_time", "gen_tokens_per_s")
    avg = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    return {"bench": "ppo", "model": "SmolLM2-135M x 4 (actor, critic, reference, reward model)", "prompts": P,
            "max_new_tokens": T, "ppo_epochs": epochs, **{k: round(v, 3) for k, v in avg.items()},
            "generation_share": round(avg["time/generation"] / avg["step_time"], 3),
            "peak_rss_mb": round(peak_rss_mb())}
