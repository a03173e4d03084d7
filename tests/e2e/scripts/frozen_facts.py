"""Run a real stage in this process and print JSON facts about its frozen models (the reference).

    python frozen_facts.py STAGE OUTPUT_DIR [override ...]

The stage runs exactly as the worker runs it (compose -> output_dir -> Strategy -> RunContext -> stage);
``Strategy.prepare_frozen`` is wrapped only to keep a handle on what it returns. Rank 0 prints one line
``FACTS {...}`` after training: every frozen parameter's requires_grad / grad, whether the frozen model is
one of the train engines or shares a parameter with an engine's optimizer, and (world of one) the logits
of an offloaded and a device-resident reference on the same batch.
"""
import json
import sys

import torch

from rlhf_cli.config.compose import compose, to_yaml
from rlhf_cli.engine.process_exit import exit_process
from rlhf_cli.engine.strategy import OffloadedModel, Strategy
from rlhf_cli.models.loading import load_reference, load_tokenizer
from rlhf_cli.quiet import quiet_libraries
from rlhf_cli.stages import get_runner
from rlhf_cli.training.run_dir import prepare_output_dir
from rlhf_cli.training.runtime import RunContext


def optimizer_param_ids(engine) -> set:
    opt = engine.ds.optimizer
    inner = getattr(opt, "optimizer", opt)  # ZeRO wraps the torch optimizer
    ids = {id(p) for g in inner.param_groups for p in g["params"]}
    return ids | {id(p) for p in engine.module.parameters()}


def frozen_facts(model, strategy) -> dict:
    params = list(model.parameters())
    # A ZeRO-3-sharded frozen model is a DeepSpeedEngine whose ``optimizer`` is DeepSpeed's parameter
    # coordinator (DeepSpeedZeRoOffload: gathers/releases shards, holds no optimizer state).
    opt = getattr(model, "optimizer", None)
    inner = getattr(model, "module", model)
    engines = strategy.engines.values()
    trained = set().union(*(optimizer_param_ids(e) for e in engines))
    return {
        "type": type(model).__name__,
        "num_params": len(params),
        "requires_grad_any": any(p.requires_grad for p in params),
        "grad_any": any(p.grad is not None for p in params),
        "is_engine": any(model is e.ds or model is e.module or model is e for e in engines),
        "optimizer": type(opt).__name__ if opt is not None else None,
        "optimizer_state": isinstance(getattr(opt, "optimizer", opt), torch.optim.Optimizer)
        or bool(getattr(opt, "state", None)) or bool(getattr(opt, "param_groups", None)),
        "shares_params_with_engines": any(id(p) in trained for p in params),
        "training": any(m.training for m in inner.modules()),
    }


def offload_logits_diff(cfg, strategy) -> float:
    """Max |logits| difference between an offloaded and a device-resident reference on one batch."""
    tok = load_tokenizer(cfg.model)
    resident = strategy.prepare_frozen(load_reference(cfg, tok), offload=False)
    offloaded = strategy.prepare_frozen(load_reference(cfg, tok), offload=True)
    assert isinstance(offloaded, OffloadedModel)
    ids = torch.randint(0, len(tok), (2, 12), generator=torch.Generator().manual_seed(0)).to(strategy.device)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.no_grad():
        a = resident(input_ids=ids, attention_mask=mask).logits.float()
        b = offloaded(input_ids=ids, attention_mask=mask).logits
        c = offloaded(ids).logits  # positional arguments too
        a0 = resident(ids).logits.float()
    assert b.device == ids.device and c.device == ids.device
    return max(float((a - b.float()).abs().max()), float((a0 - c.float()).abs().max()))


def main() -> None:
    stage, out, *overrides = sys.argv[1:]
    quiet_libraries(False)
    cfg = compose(stage, None, [*overrides, f"output_dir={out}"])
    strategy = Strategy(cfg)
    strategy.setup_distributed()
    if strategy.is_main:  # as the CLI does: one process prepares (and locks) the run dir
        prepare_output_dir(cfg, to_yaml(cfg))
    strategy.barrier()
    strategy.seed_everything(cfg.seed)
    frozen = []
    real_prepare_frozen = strategy.prepare_frozen

    def keep(model, offload=False):
        frozen.append(real_prepare_frozen(model, offload=offload))
        return frozen[-1]

    strategy.prepare_frozen = keep
    ctx = RunContext(cfg, strategy)
    try:
        summary = get_runner(cfg.stage)(ctx)
    finally:
        ctx.metrics.close()
    strategy.prepare_frozen = real_prepare_frozen
    facts = {"engines": list(strategy.engines), "frozen": [frozen_facts(m, strategy) for m in frozen],
             "steps": summary["steps"], "world_size": strategy.world_size}
    if strategy.world_size == 1:
        facts["offload_logits_max_diff"] = offload_logits_diff(cfg, strategy)
    if strategy.is_main:
        print("FACTS " + json.dumps(facts), flush=True)
    exit_process(0)  # as the worker ends (rlhf_cli/engine/process_exit.py)


if __name__ == "__main__":
    main()
