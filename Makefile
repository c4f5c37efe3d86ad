# make install: the package, its test/lint tools and PyTorch into the active Python
# make test:    the fast test suite (what CI runs); make test-slow: the long tests
# make quality: the toy quality benchmark (scripts/quality_bench.py, ~45 min on 2 cores)
# make fig1:    the paper's Figure 1, clipping against the penalty (scripts/fig1.py, ~6 min)
PYTHON ?= python3
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install test test-avx2 test-slow lint bench gpu-wheels quality quality-quick fig1 train clean

install:
	$(PYTHON) -m pip install $(TORCH_PINS)
	$(PYTHON) -m pip install -e ".[dev,metrics,sweep,lsun,export]"
	@# pyenv only puts new console scripts on PATH after a rehash
	@command -v pyenv >/dev/null 2>&1 && pyenv rehash || true

# two worker processes, one test file at a time each: every test runs single-threaded
# (tests/conftest.py), so two of them fill 2 cores (8.9 -> 6.1 min on the CI machine)
TEST_WORKERS ?= 2

test:
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# the same suite on AVX2 kernels only (as on a CPU without AVX-512): no test may depend
# on which kernels a CPU has
test-avx2:
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(MAKE) test

test-slow:
	$(PYTHON) -m pytest -q -m slow

bench:
	$(PYTHON) scripts/bench.py

# wheels that the lent GPU machines lack (they have no network): carried to them in .whl/
# for scripts/gpu_check.sh (the CUDA tests and the CUDA benchmark in one run)
gpu-wheels:
	$(PYTHON) -m pip wheel --no-deps -q -w .whl hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 packaging

lint:
	$(PYTHON) -m ruff check wgangp tests scripts

# the VEEGAN/PacGAN toy comparison (ring + grid, 5 seeds each, one run at a time on 2 threads)
quality:
	$(PYTHON) scripts/quality_bench.py --seeds 5 --jobs 1 --threads 2 --json docs/quality_bench.json --figure docs/quality_ring.png

quality-quick:
	$(PYTHON) scripts/quality_bench.py --quick --jobs 2

# the paper's Figure 1 (clipping against the penalty), into docs/ (~6 min on 2 cores)
fig1:
	$(PYTHON) scripts/fig1.py --out docs --json docs/fig1.json

train:
	wgangp-train

clean:
	rm -rf outputs multirun build dist *.egg-info
