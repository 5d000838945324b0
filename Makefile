# orthoseg: `make demo` runs the whole system on embedded defaults, `make test` runs the tests.
# Both create .venv on first use; later runs reuse it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# CPU build by default; set TORCH_SPEC (e.g. "torch>=2.8") to let pip pick a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# Exact versions the tests run with (constraints; torch and orthoseg are not in it): `make lock` renews it.
LOCK   := requirements.lock

.PHONY: venv demo test lint bench clean compile lock

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c $(LOCK) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c $(LOCK) -e ".[test]"
	touch $(STAMP)

# Resolve pyproject.toml's dependencies anew in a scratch environment and pin what it got.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip setuptools wheel
	.lock-venv/bin/python -m pip install -q "$(TORCH_SPEC)"
	.lock-venv/bin/python -m pip install -q ".[test]"
	{ sed -n '1,3p' $(LOCK); .lock-venv/bin/python -m pip freeze --exclude-editable \
	    | grep -v -e '^orthoseg[ @=]' -e '^torch==' | sort -f; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

demo: $(STAMP)
	$(VENV)/bin/orthoseg demo

test: $(STAMP)
	$(PY) -m pytest -q

LINT_PATHS := src tests components pipelines benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

compile: $(STAMP)
	$(VENV)/bin/orthoseg pipeline compile --out pipelines/compiled

bench: $(STAMP)
	$(PY) benchmarks/synth.py
	$(PY) benchmarks/validate.py

clean:
	rm -rf .orthoseg
