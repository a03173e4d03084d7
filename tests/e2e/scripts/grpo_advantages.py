"""GRPO advantages of one fixed batch of rewards, split over however many processes run this script.

    python grpo_advantages.py OVERRIDE ...      (e.g. grpo.scale_rewards=batch)

Each process takes its share of 8 groups of G = 4 rewards (whole groups, as the stage splits prompts) and
calls the RL core's ``advantages`` with the GRPO stage's own algorithm and a real Strategy (gloo across
processes); rank 0 prints ``ADV [...]``: every process's per-response advantages in group order.
"""
import json
import sys

import torch

from rlhf_cli.config.compose import compose
from rlhf_cli.engine.process_exit import exit_process
from rlhf_cli.engine.strategy import Strategy
from rlhf_cli.rl.experience import advantages
from rlhf_cli.stages.grpo import algorithm

G, GROUPS = 4, 8


def main() -> None:
    cfg = compose("grpo", None, ["model=tiny", "grpo.num_generations=4", "output_dir=unused", *sys.argv[1:]])
    strategy = Strategy(cfg)
    strategy.setup_distributed()
    # groups of very different spread: a per-process std differs from the whole batch's
    rewards = torch.randn(GROUPS, G, generator=torch.Generator().manual_seed(0)) * torch.arange(1, GROUPS + 1)[:, None]
    mine = range(strategy.rank, GROUPS, strategy.world_size)
    scores = torch.cat([rewards[k] for k in mine])
    adv, _ = advantages(strategy, algorithm(cfg.grpo), scores, torch.ones(len(scores), 3))
    adv = adv[:, 0].tolist()
    shares = strategy.all_gather_object({k: adv[j * G:(j + 1) * G] for j, k in enumerate(mine)})
    if strategy.is_main:
        merged = {k: v for share in shares for k, v in share.items()}
        print("ADV " + json.dumps([x for k in range(GROUPS) for x in merged[k]]), flush=True)
    exit_process(0)


if __name__ == "__main__":
    main()
