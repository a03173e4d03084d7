"""One PPO step of SmolLM2-135M (actor, critic, reference and reward model all 135M) through the real stage,
one process: generation tokens/s, the time split generate / score (reward + reference + critic) / train,
step time and peak memory, and the FLOPs that scoring and the update cannot avoid against their time.

The floor (one PPO epoch, the sampler's own old log-probs): per token of prompt + response, forwards of the
reference, the critic and the reward model (2 N_body each) and forward + backward of actor and critic
(6 N_body each): 18 N_body; the LM head (2 H forward, 6 H with backward) only at response tokens for the
reference and the actor. N_body = the 135M parameters less the 28M embedding, H = the 28M tied head."""
from __future__ import annotations

import tempfile

from rlhf_cli.bench.peak import peak_rss_mb


def make_reward_model(directory: str) -> str:
    """A 135M reward model dir (the embedded model's backbone with a seeded head) for the benchmark."""
    import json

    from rlhf_cli.config.compose import compose
    from rlhf_cli.models.embedded import prepare_model
    from rlhf_cli.models.loading import load_tokenizer
    from rlhf_cli.models.reward_model import REWARD_CONFIG, build_reward_model

    cfg = compose("rm", None, ["model=smollm2-135m", f"output_dir={directory}/unused"])
    prepare_model(cfg)
    tok = load_tokenizer(cfg.model)
    rm = build_reward_model(cfg.model, tok, seed=0)
    rm.save_pretrained(directory)
    tok.save_pretrained(directory)
    with open(f"{directory}/{REWARD_CONFIG}", "w") as f:
        json.dump({"type": "outcome", "score_position": "last_token", "template": "chat", "max_length": 512}, f)
    return directory


N_HEAD_135M = 49_152 * 576  # SmolLM2-135M's tied embedding / LM head


def scoring_update_flops(prompts: int, prompt_len: float, response_len: float, epochs: int) -> float:
    """The floor of scoring + update FLOPs per step (module docstring)."""
    from rlhf_cli.bench.sft import N_PARAMS_135M

    body, head = N_PARAMS_135M - N_HEAD_135M, N_HEAD_135M
    tokens, responses = prompts * (prompt_len + response_len), prompts * response_len
    scoring = 3 * 2 * body * tokens + 2 * head * responses
    update = epochs * (2 * 6 * body * tokens + 6 * head * responses)
    return scoring + update


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
                                  int(opts.get("steps", 2)))
    keys = ("time/generation", "time/scoring", "time/update", "step_time", "gen_tokens_per_s", "prompt_length",
            "response_length")
    avg = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    floor = scoring_update_flops(P, avg["prompt_length"], avg["response_length"], epochs)
    busy = avg["time/scoring"] + avg["time/update"]
    return {"bench": "ppo", "model": "SmolLM2-135M x 4 (actor, critic, reference, reward model)", "prompts": P,
            "max_new_tokens": T, "ppo_epochs": epochs, **{k: round(v, 3) for k, v in avg.items()},
            "generation_share": round(avg["time/generation"] / avg["step_time"], 3),
            "scoring_update_over_generation": round(busy / avg["time/generation"], 3),
            "scoring_update_gflop": round(floor / 1e9, 1),
            "scoring_update_fraction_of_matmul_peak": round(floor / 1e9 / busy / peak_gflops, 3),
            "peak_rss_mb": round(peak_rss_mb())}
