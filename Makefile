# Quick start:  make demo   (runs the main job on embedded defaults)
#               make test   (runs the test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Without a GPU, install the CPU wheel of torch first: a bare "torch" requirement pulls a multi-GB CUDA build.
CPU_TORCH ?= torch==2.13.0
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: install browser demo test clean

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

# The browser tests (tests/test_report_browser.py) drive Debian's headless Chromium: installed here where absent
# and where apt-get may run (CI runs as root); elsewhere they are skipped with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 \
	  || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	  || (DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
	  || echo "chromium could not be installed (apt-get needs root): the browser tests will be skipped"

test: install browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
