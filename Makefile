# Two commands do all set-up on a fresh Debian/Ubuntu machine with Python >= 3.10:
#   make demo   - venv, install, run scenarios/demo.yaml on emulated replicas, print the report path
#   make test   - install test dependencies (Debian servers too, when root) and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: demo test test-deps stack-test bench clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/slm-harness sweep scenarios/demo.yaml

test-deps: $(STAMP)
	bash scripts/install-test-deps.sh

test: test-deps
	$(PY) -m pytest -ra $(PYTEST_ARGS)

stack-test: test-deps
	$(PY) -m pytest -ra -m stack tests/test_stack.py

bench: $(STAMP)
	$(PY) benchmarks/emulator_throughput.py
	$(PY) benchmarks/generator_fidelity.py
	$(PY) benchmarks/telemetry.py

clean:
	rm -rf $(VENV) results .pytest_cache
