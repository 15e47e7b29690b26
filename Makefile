# Two entry points (see README): `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# A CPU build of torch 2.13.0 lies on this machine's disk; a bare `torch` requirement would pull a CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	# k-diffusion for the drop-in's parity tests: its sampling module only (its package pulls wandb, clip, ...)
	$(PY) -m pip install -q --no-deps "k-diffusion==0.1.1.post1"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m samplers demo

# Two worker processes, each with one torch thread (tests/conftest.py): on the 2-core CI machine the suite takes about
# half the time of one process; a test file stays on one worker, so its module fixtures are built once.
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

.PHONY: install demo test
