"""The shared RL core: prompt stream, rollout and scoring, experience, and the policy update written once
(PPO, GRPO and the next algorithms are configurations of it; see ARCHITECTURE.md)."""
