# make install:  PyTorch, wgangp and its test, lint, docs and sweep tools
# make test:     the fast test suite (what CI runs); make test-slow: the long tests
# make lint:     ruff, the import-layer contracts and the docs build
# make docs:     the configuration reference from the schema, then the site into site/
# make wheels / make install-offline: an install on a machine without network
# make quality:  the toy quality benchmark (scripts/quality_bench.py, ~45 min on 2 cores)
# make fig1:     the paper's Figure 1, clipping against the penalty (scripts/fig1.py, ~6 min)
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,docs,export,metrics,sweep,lsun,mlflow,wandb
WHEELS ?= wheels

# Inside an active virtual or conda environment, everything runs in it. Without one, a
# system Python may refuse pip (PEP 668, "externally managed"), so the targets use a
# project-local .venv, which `make install` creates.
ifeq ($(strip $(VIRTUAL_ENV)$(CONDA_PREFIX)),)
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
BIN := $(VENV)/bin/
else
PYTHON ?= python3
BIN :=
endif

.PHONY: install venv install-offline wheels test test-avx2 test-slow lint docs bench quality quality-quick fig1 train clean

venv:
ifneq ($(VENV),)
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
endif

install: venv
	$(PYTHON) -m pip install $(TORCH_PINS)
	$(PYTHON) -m pip install -e ".[$(EXTRAS)]"
	@# pyenv only puts new console scripts on PATH after a rehash
	@command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
ifneq ($(VENV),)
	@echo "installed into $(VENV): run 'source $(VENV)/bin/activate' to put wgangp-train on PATH"
endif

# every wheel an install needs (PyTorch, wgangp's dependencies and extras, wgangp
# itself) into wheels/, on a machine with network and the target's Python and platform
# (setuptools and wheel too: the editable install builds wgangp from them)
wheels: venv
	$(PYTHON) -m pip wheel -w $(WHEELS) "setuptools>=64" wheel $(TORCH_PINS) ".[$(EXTRAS)]"

# the same install from wheels/ alone, for a machine without network
install-offline: venv
	$(PYTHON) -m pip install --no-index --find-links $(WHEELS) $(TORCH_PINS)
	$(PYTHON) -m pip install --no-index --find-links $(WHEELS) -e ".[$(EXTRAS)]"

# two worker processes, one test file at a time each: every test runs single-threaded
# (tests/conftest.py), so two of them fill 2 cores
TEST_WORKERS ?= 2

test:
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# the same suite on AVX2 kernels only (as on a CPU without AVX-512): no test may depend
# on which kernels a CPU has
test-avx2:
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(MAKE) test

test-slow:
	$(PYTHON) -m pytest -q -m slow

lint:
	$(PYTHON) -m ruff check wgangp tests scripts
	$(PYTHON) -m ruff format --check wgangp tests scripts
	$(BIN)lint-imports
	$(MAKE) docs

# docs/configuration.md is generated from the schema; --strict fails on a broken link
docs:
	$(PYTHON) scripts/config_reference.py
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict --site-dir site

bench:
	$(PYTHON) scripts/bench.py

# the VEEGAN/PacGAN toy comparison (ring + grid, built-in and PacGAN coordinates, 5 seeds
# each, two runs at a time on one thread each: two threads per run waste CPU time)
quality:
	$(PYTHON) scripts/quality_bench.py --seeds 5 --jobs 2 --threads 1 --json docs/quality_bench.json --figure docs/quality_ring.png

quality-quick:
	$(PYTHON) scripts/quality_bench.py --quick --jobs 2

# the paper's Figure 1 (clipping against the penalty), into docs/ (~6 min on 2 cores)
fig1:
	$(PYTHON) scripts/fig1.py --out docs --json docs/fig1.json

train:
	$(BIN)wgangp-train

clean:
	rm -rf outputs multirun build dist site *.egg-info
