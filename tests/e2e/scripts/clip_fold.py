"""Clipping folded into fused AdamW (engine/clip_in_adam.py) against DeepSpeed's own clip, on real engines.

    python clip_fold.py OUTPUT_DIR MAX_GRAD_NORM [override ...]

Prepares two ``TrainEngine``s from the same tiny model through the real ``Strategy`` (ZeRO stage 0, fp32):
"folded" as prepared, "deepspeed" with the fold taken back (DeepSpeed's ``clip_fp32_gradients``). Both train
the same batches; prints one line ``FACTS {...}``: per step the gradient norm computed here from the
gradients themselves, the norm each engine reports, and the largest weight difference between the two after
the step (both engines start every step from the same weights and optimizer state: see ``sync``).
"""
import copy
import json
import sys

import torch

from rlhf_cli.config.compose import compose
from rlhf_cli.engine.process_exit import exit_process
from rlhf_cli.engine.strategy import Strategy
from rlhf_cli.models.loading import load_causal_lm, load_tokenizer
from rlhf_cli.quiet import quiet_libraries

STEPS, MICRO, LENGTH = 3, 2, 16


def sync(dst, src) -> None:
    """Give ``dst`` the weights and Adam state of ``src``, so that every step compares one update from the same
    state. Compared over a trajectory instead, the two engines' rounding (``g / s`` against ``g * (1 / s)``)
    is amplified ~40x a step at this learning rate (max weight difference 7e-9, 3e-7, 1.4e-5 over three steps
    on an AVX-512 host), where a clip left out moves the weights by ~1e-2 from the first step."""
    state_src, state_dst = src.ds.optimizer.state, dst.ds.optimizer.state
    with torch.no_grad():
        for a, b in zip(src.module.parameters(), dst.module.parameters()):
            b.copy_(a)
            for key, value in state_src[a].items():
                state_dst[b][key].copy_(value)


def main() -> None:
    out, max_norm, *overrides = sys.argv[1:]
    quiet_libraries(False)
    cfg = compose("sft", None, ["model=tiny", "engine=zero0", "optim.warmup_steps=1", "optim.lr=1e-2",
                                f"optim.max_grad_norm={max_norm}", f"output_dir={out}", *overrides])
    s = Strategy(cfg)
    s.setup_distributed()
    s.seed_everything(cfg.seed)
    tok = load_tokenizer(cfg.model)
    model = load_causal_lm(cfg.model, tok)
    folded = s.prepare(model, STEPS, name="folded")
    plain = s.prepare(copy.deepcopy(model), STEPS, name="deepspeed")
    fold_installed = "clip_fp32_gradients" in vars(folded.ds)
    del plain.ds.clip_fp32_gradients  # back to DeepSpeed's own method
    rows = []
    for _ in range(STEPS):
        ids = torch.randint(0, len(tok), (MICRO, LENGTH))
        norms = {}
        for engine in (folded, plain):
            loss = engine(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
            engine.backward(loss)
            grads = [p.grad.flatten() for p in engine.module.parameters() if p.grad is not None]
            norms[engine.name] = float(torch.linalg.vector_norm(torch.cat(grads)))
            engine.step()
            engine.end_update()
        diff = max(float((a - b).abs().max()) for a, b in zip(folded.module.parameters(), plain.module.parameters()))
        sync(plain, folded)
        rows.append({"norm": norms, "reported": folded.grad_norm(), "deepspeed_reported": plain.grad_norm(),
                     "max_weight_diff": diff})
    print("FACTS " + json.dumps({"fold_installed": fold_installed, "steps": rows}), flush=True)
    exit_process(0)


if __name__ == "__main__":
    main()
