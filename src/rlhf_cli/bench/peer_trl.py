"""TRL's trainers on the same model, data, batch and length as our benchmarks (`rlhf bench --vs trl`).

TRL is an optional extra (``pip install 'rlhf-cli[bench]'``), never a runtime dependency. Each function
trains a few real steps of TRL's own trainer on the embedded SmolLM2-135M in fp32 and returns the
policy's real (non-padding) tokens per second over the steps after the warm-up ones, counted exactly as our
stages count them: a forward hook on the policy sees every training forward, a callback times each step.
"""
from __future__ import annotations

import tempfile
import time
from typing import Dict, List

import torch


def require_trl() -> str:
    try:
        import trl
    except ImportError:
        from rlhf_cli.errors import ConfigError

        raise ConfigError("--vs trl needs TRL: pip install 'rlhf-cli[bench]' (or: pip install trl)") from None
    return trl.__version__


def model_dir(stage: str) -> str:
    """The embedded SmolLM2-135M as a local HF dir (converted once, as our stages do)."""
    from rlhf_cli.config.compose import compose
    from rlhf_cli.models.embedded import prepare_model
    from rlhf_cli.models.loading import model_source

    cfg = compose(stage, None, ["model=smollm2-135m", "output_dir=/tmp/unused"])
    prepare_model(cfg)
    return str(model_source(cfg.model))


class StepMeter:
    """Real tokens the policy's forwards saw, and wall time, per optimizer step."""

    def __init__(self, model):
        self.tokens, self.steps = 0, []
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        if not module.training or not torch.is_grad_enabled():
            return  # reference / evaluation forwards: not training tokens
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        self.tokens += int(mask.sum()) if mask is not None else int(ids.numel())

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class _Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                meter.tokens, meter.t0 = 0, time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                meter.steps.append((time.perf_counter() - meter.t0, meter.tokens))

        return _Timer()

    def result(self, warmup: int = 1) -> Dict[str, float]:
        """Rates over the steps after the first ``warmup`` (bench/sft.WARMUP_STEPS for SFT, RM and DPO)."""
        steps = self.steps[warmup:] or self.steps
        t = sum(dt for dt, _ in steps)
        return {"tokens_per_s": round(sum(n for _, n in steps) / t, 1), "step_time": round(t / len(steps), 3)}


def common_args(cls, out: str, steps: int, batch: int, gc: bool = False, **kw):
    """TrainingArguments of a TRL config class as our runs are set up. ``gc``: TRL's activation
    checkpointing, which TRL turns on by default (~30% more compute); ours is off by default, so the
    comparison turns it off unless ``trl_gc=true`` (or ``both``) asks for TRL's default."""
    cuda = torch.cuda.is_available()
    return cls(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
               learning_rate=1e-5, lr_scheduler_type="constant", logging_steps=10**6, save_strategy="no",
               eval_strategy="no", report_to="none", use_cpu=not cuda, bf16=cuda,
               dataloader_num_workers=0, disable_tqdm=True, seed=0, gradient_checkpointing=gc, **kw)


def sft(seq: int, batch: int, steps: int, limit: int, warmup: int, packing: bool, data: str = "gsm8k",
        gc: bool = False) -> Dict[str, float]:
    """TRL SFTTrainer on the bench's SFT data (bench/data.py), loss on the completion (prompt-completion form)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from rlhf_cli.bench.data import trl_records

    path = model_dir("sft")
    rows = trl_records("sft", data, limit)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    meter = StepMeter(model)
    with tempfile.TemporaryDirectory() as out:
        args = common_args(SFTConfig, out, steps, batch, gc, max_length=seq, packing=packing, dataset_num_proc=None)
        SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                   processing_class=AutoTokenizer.from_pretrained(path), callbacks=[meter.callback()]).train()
    return meter.result(warmup)


def rm(seq: int, batch: int, steps: int, limit: int, warmup: int, data: str = "hh",
       gc: bool = False) -> Dict[str, float]:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from rlhf_cli.bench.data import trl_records

    path = model_dir("rm")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                               attn_implementation="sdpa")
    model.config.pad_token_id = tok.pad_token_id
    meter = StepMeter(model)
    with tempfile.TemporaryDirectory() as out:
        args = common_args(RewardConfig, out, steps, batch, gc, max_length=seq)
        RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(trl_records("rm", data, limit)),
                      processing_class=tok, callbacks=[meter.callback()]).train()
    return meter.result(warmup)


def dpo(seq: int, batch: int, steps: int, limit: int, warmup: int, precompute: bool, data: str = "hh",
        gc: bool = False) -> Dict[str, float]:
    """TRL DPOTrainer (sigmoid loss, beta 0.1). Its padding_free option is unavailable in TRL 1.16 (it warns
    and pads), so TRL pads each micro-batch to its longest sequence."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rlhf_cli.bench.data import trl_records

    path = model_dir("dpo")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    meter = StepMeter(model)
    with tempfile.TemporaryDirectory() as out:
        args = common_args(DPOConfig, out, steps, batch, gc, max_length=seq, beta=0.1,
                           precompute_ref_log_probs=precompute)
        DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(trl_records("dpo", data, limit)),
                   processing_class=AutoTokenizer.from_pretrained(path), callbacks=[meter.callback()]).train()
    return meter.result(warmup)


def grpo(prompts: int, generations: int, tokens: int, steps: int, limit: int, gc: bool = False) -> Dict[str, float]:
    """TRL GRPOTrainer on the bundled GSM8K prompts (our grpo defaults' template) with our gsm8k verifier as
    its reward function: ``prompts`` x ``generations`` completions of up to ``tokens`` tokens per step, one
    update per generation (num_iterations 1, no KL term, as our defaults). Step time covers generation,
    scoring and the update, as our step_time does."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_cli.bench.data import builtin_records
    from rlhf_cli.config.compose import compose
    from rlhf_cli.rewards.registry import build_reward_fn

    d = compose("grpo", None, ["model=smollm2-135m", "output_dir=/tmp/unused"]).data
    rows = [{"prompt": [{"role": "user", "content": d.prompt_template.format(prompt=r[d.prompt_field])}],
             "answer": r["answer"]} for r in builtin_records("gsm8k_prompts.jsonl", limit)]
    verifier = build_reward_fn("gsm8k")
    generated: List[int] = []

    def gsm8k(prompts, completions, answer, completion_ids, **_):
        generated.append(sum(len(c) for c in completion_ids))  # once per step (one generation per step)
        return verifier([p[-1]["content"] for p in prompts], [c[-1]["content"] for c in completions], answer=answer)

    path = model_dir("grpo")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    meter = StepMeter(model)
    with tempfile.TemporaryDirectory() as out:
        args = common_args(GRPOConfig, out, steps, prompts * generations, gc, num_generations=generations,
                           max_completion_length=tokens, temperature=1.0, beta=0.0, num_iterations=1)
        GRPOTrainer(model=model, reward_funcs=gsm8k, args=args, train_dataset=Dataset.from_list(rows),
                    processing_class=AutoTokenizer.from_pretrained(path), callbacks=[meter.callback()]).train()
    later = generated[1:] or generated
    return {**meter.result(), "generated_tokens_per_step": round(sum(later) / len(later), 1)}
