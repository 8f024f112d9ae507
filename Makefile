# Two commands do all set-up: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tinymem-installed
JOBS   ?= 2

.PHONY: setup deps demo test bench zoo transfer clean

setup: $(STAMP)

APT_PACKAGES := gcc libc6-dev gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm clang libclang-rt-14-dev

# System packages: installed when missing (needs root, as on CI); otherwise say what to install.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	  else echo "tinymem needs: sudo apt-get install --no-install-recommends $$missing"; exit 1; fi; \
	fi

$(STAMP): pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/tinymem demo

test: setup
	$(PY) -m pytest -q -n $(JOBS) tests

bench: setup
	$(PY) benchmarks/bench_spine.py
	$(PY) benchmarks/bench_patch.py
	$(PY) benchmarks/bench_alloc.py
	$(PY) benchmarks/bench_lsm.py
	$(PY) benchmarks/bench_kernels.py
	$(PY) benchmarks/bench_train.py

# Rebuild the model zoo (needs TensorFlow: the `zoo` extra). The .tflite files are committed.
zoo: setup
	$(PY) -m pip install -q -e '.[zoo]'
	$(PY) examples/make_zoo.py

# On-device transfer learning on the bundled task (models/transfer_digits*): choose the sparse
# update under 256 KiB, fine-tune on the emulated Cortex-M4, compare with float fine-tuning.
# The model and data are rebuilt with TensorFlow by examples/make_transfer.py (the `zoo` extra).
transfer: setup
	$(PY) -m tinymem.train.transfer

clean:
	rm -rf build out .pytest_cache
