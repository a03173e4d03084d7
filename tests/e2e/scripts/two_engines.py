"""Two trainable engines in one run ("actor": a tiny causal LM, "critic": a tiny value model), each with
its own optimizer settings, through the real ``Strategy``: checkpoint after step 3, resume exactly.

    python two_engines.py save|resume OUTPUT_DIR [override ...]     (or under the deepspeed launcher)

``save`` trains steps 1-5 and writes checkpoints/step-3 after step 3; ``resume`` prepares fresh engines,
loads step-3 and trains steps 4-5 again. Each step's batch is drawn from the global torch RNG, so the
resumed steps see the same data only if the RNG state was restored too. Rank 0 writes
``<mode>.json`` (per-step losses, lrs, grad norms) and ``<mode>-weights.pt`` (final full weights).
"""
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from rlhf_cli.config.compose import compose
from rlhf_cli.engine.checkpoints import checkpoint_dir
from rlhf_cli.engine.process_exit import exit_process
from rlhf_cli.engine.strategy import Strategy
from rlhf_cli.models.loading import load_causal_lm, load_tokenizer
from rlhf_cli.models.reward_model import build_reward_model
from rlhf_cli.quiet import quiet_libraries

TOTAL, SAVE_AT, MICRO, LENGTH = 5, 3, 2, 16
LRS = {"actor": 1e-3, "critic": 5e-3}


def one_step(strategy, actor, critic, vocab: int) -> dict:
    s = strategy
    ids = torch.randint(0, vocab, (MICRO * s.world_size, LENGTH))  # global batch from the global RNG
    targets = torch.randn(MICRO * s.world_size)
    ids, targets = ids[s.rank * MICRO:(s.rank + 1) * MICRO].to(s.device), targets[s.rank * MICRO:][:MICRO]
    mask = torch.ones_like(ids)
    actor_loss = actor(input_ids=ids, attention_mask=mask, labels=ids).loss
    actor.backward(actor_loss, weight=s.world_size)  # a per-process mean: the step's mean is over processes
    actor.step()
    actor.end_update()
    values = critic(ids, mask)[:, -1]
    critic_loss = ((values - targets.to(values.device)) ** 2).mean()
    critic.backward(critic_loss, weight=s.world_size)
    critic.step()
    critic.end_update()
    a, c = s.all_reduce([float(actor_loss), float(critic_loss)])
    return {"actor_loss": a / s.world_size, "critic_loss": c / s.world_size, "actor_lr": actor.lr(),
            "critic_lr": critic.lr(), "actor_grad_norm": actor.grad_norm(), "critic_grad_norm": critic.grad_norm()}


def main() -> None:
    mode, out, *overrides = sys.argv[1:]
    out = Path(out)
    quiet_libraries(False)
    cfg = compose("sft", None, ["model=tiny", "optim.warmup_steps=1", "optim.max_grad_norm=1.0",
                                f"output_dir={out}", *overrides])
    s = Strategy(cfg)
    s.setup_distributed()
    s.seed_everything(cfg.seed)
    tok = load_tokenizer(cfg.model)
    optims = {name: OmegaConf.merge(cfg.optim, {"lr": lr}) for name, lr in LRS.items()}
    actor = s.prepare(load_causal_lm(cfg.model, tok), TOTAL, name="actor", optim=optims["actor"])
    critic = s.prepare(build_reward_model(cfg.model, tok, seed=1), TOTAL, name="critic", optim=optims["critic"])
    actor.train()
    critic.train()
    root = out / "checkpoints"
    start = 0
    if mode == "resume":
        start = s.load_checkpoint(checkpoint_dir(root, SAVE_AT))["step"]
    rows = {}
    for step in range(start + 1, TOTAL + 1):
        rows[step] = one_step(s, actor, critic, len(tok))
        if mode == "save" and step == SAVE_AT:
            s.save_checkpoint(root, step, {"total_steps": TOTAL}, keep=2)
    weights = {name: e.consolidated_state_dict() for name, e in s.engines.items()}  # collective under ZeRO-3
    if s.is_main:
        (out / f"{mode}.json").write_text(json.dumps({"engines": list(s.engines), "steps": rows}))
        torch.save({n: {k: v.detach().clone() for k, v in sd.items()} for n, sd in weights.items()},
                   out / f"{mode}-weights.pt")
    s.barrier()
    exit_process(0)  # as the worker ends (rlhf_cli/engine/process_exit.py)


if __name__ == "__main__":
    main()
