"""Clipping folded into fused AdamW (engine/clip_in_adam.py) against DeepSpeed's own clip, on real engines.

    python clip_fold.py OUTPUT_DIR MAX_GRAD_NORM [override ...]

Prepares two ``TrainEngine``s from the same tiny model through the real ``Strategy`` (ZeRO stage 0, fp32):
"folded" as prepared, "deepspeed" with the fold taken back (DeepSpeed's ``clip_fp32_gradients``). Both train
the same batches; prints one line ``FACTS {...}``: per step the gradient norm computed here from the
gradients themselves, the norm each engine reports, and the largest weight difference between the two.
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
        diff = max(float((a - b).abs().max()) for a, b in zip(folded.module.parameters(), plain.module.parameters()))
        rows.append({"norm": norms, "reported": folded.grad_norm(), "deepspeed_reported": plain.grad_norm(),
                     "max_weight_diff": diff})
    print("FACTS " + json.dumps({"fold_installed": fold_installed, "steps": rows}), flush=True)
    exit_process(0)


if __name__ == "__main__":
    main()
