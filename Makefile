# Quick start:  make demo   (runs the main job on embedded defaults)
#               make test   (runs the test suite)
# Installs come from requirements/lock.txt, the exact versions the suite last passed with; `make lock`
# refreshes it (a deliberate change: run `make test` after it and commit the lock with what it changed).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/lock.txt
# The test extras, plus the peer libraries the tests compare against where their own floors allow (TransformerLens
# needs torch>=2.6 and transformers>=5.9, above ours: test-oldest runs without it and those tests are skipped).
EXTRAS := test,peers
# torch, transformers, accelerate, tokenizers, safetensors and numpy: installed at their floors by test-oldest.
FLOORED := torch transformers accelerate tokenizers safetensors numpy
# Without a GPU, torch is installed first, alone, as a CPU wheel: a bare "torch" from PyPI is a multi-GB CUDA
# build. This machine has the locked version's CPU wheel on disk; elsewhere pass the CPU index, e.g.
#   make install TORCH_INDEX=--extra-index-url=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: install browser demo test test-wheel test-oldest test-newest lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
ifneq ($(HAS_GPU),1)
	$(BIN)/pip install -c $(LOCK) $(TORCH_INDEX) torch
endif
	$(BIN)/pip install -c $(LOCK) -e ".[$(EXTRAS)]"
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

test: install browser test-wheel
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The built wheel, installed (not editable) into a fresh venv, run from outside the source tree.
test-wheel: install
	PYTHON=$(PYTHON) DEPS_VENV=$(VENV) tools/check-wheel

# The declared range, each end in its own venv and ignoring the lock: the floors of $(FLOORED) (the rest
# resolved by pip), then the newest releases the registry has (no local caps either).
test-oldest:
	rm -rf .venv-oldest && $(PYTHON) -m venv .venv-oldest
	$(PYTHON) tools/floors.py $(FLOORED) > .venv-oldest/floors.txt
	.venv-oldest/bin/pip install -c .venv-oldest/floors.txt $(TORCH_INDEX) -e ".[test]"
	.venv-oldest/bin/pip freeze --exclude-editable > .venv-oldest/installed.txt
	HF_HUB_OFFLINE=1 .venv-oldest/bin/python -m pytest -q

test-newest:
	rm -rf .venv-newest && $(PYTHON) -m venv .venv-newest
	PIP_CONFIG_FILE=/dev/null .venv-newest/bin/pip install --upgrade $(TORCH_INDEX) -e ".[$(EXTRAS)]"
	.venv-newest/bin/pip freeze --exclude-editable > .venv-newest/installed.txt
	HF_HUB_OFFLINE=1 .venv-newest/bin/python -m pytest -q

# Refresh the lock: the newest versions the range admits, frozen exactly, beside the locked torch (a new torch is
# its own deliberate choice: make lock TORCH=torch==X). torch's local label (+cpu) is dropped, so GPU machines
# take the same release from PyPI.
TORCH ?= $(shell grep -E '^torch==' $(LOCK))
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install $(TORCH_INDEX) "$(TORCH)"
	.venv-lock/bin/pip install -e ".[$(EXTRAS)]" "$(TORCH)"
	.venv-lock/bin/pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' > $(LOCK)
	rm -rf .venv-lock
	@echo "wrote $(LOCK): now run 'make test' and commit the lock with the changes it needed"

clean:
	rm -rf $(VENV) .venv-oldest .venv-newest .venv-lock runs
