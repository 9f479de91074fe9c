# Two commands (see README): `make demo` and `make test`. Each creates .venv, installs what it
# needs (CPU torch pinned first, so pip never pulls a multi-GB CUDA build) and runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
DEPS   := $(VENV)/.deps-installed

.PHONY: demo test install bench cpp-bench clean

$(DEPS): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q scikit-build-core pybind11 cmake ninja
	$(BIN)/python -m pip install -q --no-build-isolation ".[embed,plot,test]"
	touch $@

install: $(DEPS)
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps .

demo: install
	$(BIN)/hashpivot demo

test: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python bench/bench_hamming.py

cpp-bench: $(DEPS)
	PATH="$(abspath $(BIN)):$$PATH" cmake -S . -B build/tools -G Ninja -DCMAKE_BUILD_TYPE=Release
	PATH="$(abspath $(BIN)):$$PATH" cmake --build build/tools
	./build/tools/hashpivot_bench

clean:
	rm -rf build $(VENV)
