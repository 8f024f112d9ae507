# Two commands do all set-up: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tinymem-installed
JOBS   ?= 2

.PHONY: setup demo test test-fast bench zoo clean

setup: $(STAMP)

# The host C compiler is the only system dependency of the spine (CI machines have it; say so if not).
$(STAMP): pyproject.toml
	@command -v cc >/dev/null || command -v gcc >/dev/null || { echo "tinymem needs a C compiler: apt-get install gcc"; exit 1; }
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

# Rebuild the model zoo (needs TensorFlow: the `zoo` extra). The .tflite files are committed.
zoo: setup
	$(PY) -m pip install -q -e '.[zoo]'
	$(PY) examples/make_zoo.py

clean:
	rm -rf build out .pytest_cache
