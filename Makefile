# Quick start:  make demo   (runs the main job on embedded defaults)
#               make test   (runs the test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Without a GPU, install the CPU wheel of torch first: a bare "torch" requirement pulls a multi-GB CUDA build.
CPU_TORCH ?= torch==2.13.0
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
ifneq ($(HAS_GPU),1)
	$(BIN)/pip install "$(CPU_TORCH)"
endif
	$(BIN)/pip install -e ".[test]"
	touch $@

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/layerwise analyze --model minilm --data sentences --split all --out runs/demo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
