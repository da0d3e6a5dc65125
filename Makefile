# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-gpu docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned to the CPU build that these machines carry (a bare `torch` pulls CUDA wheels).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "torch==2.13.0" "jax[cpu]" "triton>=3.0"
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $(STAMP)

$(VENV)/.docs: $(STAMP)
	$(PY) -m pip install -q -e ".[docs]"
	touch $(VENV)/.docs

demo: $(STAMP)
	$(PY) -m ot_batch.demo

test: $(STAMP)
	$(PY) -m pytest -q

# On a GPU machine (CuPy, torch CUDA, JAX GPU and Triton installed there).
test-gpu:
	OT_BATCH_GPU=1 $(PYTHON) -m pytest -q -m gpu

docs: $(VENV)/.docs
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	$(PY) -m ot_batch.bench cpu

clean:
	rm -rf docs/_build docs/auto_examples docs/gen_modules bench_results
