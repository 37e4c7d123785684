# Two entry points: `make demo` (whole pipeline) and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean native native-asan

# torch is installed FIRST and exactly: a looser spec (or a dependency resolving it) pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,bench,dev]'
	touch $(STAMP)

venv: $(STAMP)

# The native runtime (runtime_native/, docs/native.md): CMake + Ninja against the venv's ExecuTorch wheel.
# CMake >= 3.28 comes from PyPI into the venv (the wheel's imported targets need it; Debian 12 ships 3.25).
ET_CMAKE = $(shell $(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/executorch/share/cmake
NATIVE_SRC := $(wildcard runtime_native/src/* runtime_native/include/* runtime_native/CMakeLists.txt) runtime_py/store_schema.sql

$(BIN)/cmake: $(STAMP)
	$(BIN)/pip install -q "cmake>=3.28"

build/native/libmetarec.so: $(NATIVE_SRC) | $(BIN)/cmake
	$(BIN)/cmake -S runtime_native -B build/native -G Ninja -DCMAKE_PREFIX_PATH=$(ET_CMAKE) -DCMAKE_BUILD_TYPE=Release
	$(BIN)/cmake --build build/native

native: build/native/libmetarec.so

# the same build with AddressSanitizer + UBSan in build/native-asan/, then the native tests against it
native-asan: | $(BIN)/cmake
	$(BIN)/cmake -S runtime_native -B build/native-asan -G Ninja -DCMAKE_PREFIX_PATH=$(ET_CMAKE) \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETAREC_SANITIZE=ON
	$(BIN)/cmake --build build/native-asan
	METAREC_NATIVE_LIB=build/native-asan/libmetarec.so ASAN_OPTIONS=detect_leaks=0 \
		LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/native

test: $(STAMP) native
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests

demo: $(STAMP)
	$(BIN)/metarec demo

clean:
	rm -rf $(VENV) artifacts
