# imagen — common tasks. Every target prints the commands it runs.
#
#   make run          build, start the server on models/ and a worker, run the sample photos as jobs
#   make test         unit + integration tests
#   make help         list targets

BUILD_DIR      ?= build
ASAN_BUILD_DIR ?= build-asan
PYTHON         ?= /usr/bin/python3
JOBS           ?= $(shell nproc 2>/dev/null || echo 4)
CMAKE_FLAGS    ?=
PYTEST_FLAGS   ?= -q
FUZZ_SECONDS   ?= 60
VALGRIND       ?= valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99
FORMAT_FILES    = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

.PHONY: help deps build run test test-unit test-integration test-sanitize fuzz format format-check bench clean

help:
	@echo "targets:"
	@echo "  deps              install missing Debian packages (scripts/install-deps.sh build test)"
	@echo "  build             configure and build into $(BUILD_DIR)/ (warnings are errors)"
	@echo "  run               build, start imagen-server on models/ (:8000 HTTP, :8001 gRPC, :8002 metrics) and"
	@echo "                    imagen-worker (:8090) on a sqlite queue, run the sample photos through all five"
	@echo "                    operations as jobs (out/), serve until Ctrl-C (RUN_SECONDS=N to stop after N s)"
	@echo "  test              deps + build + unit and integration tests"
	@echo "  test-unit         unit tests (ctest)"
	@echo "  test-integration  integration tests (pytest against real server processes)"
	@echo "  test-sanitize     both suites under ASan+UBSan ($(ASAN_BUILD_DIR)/), then integration under valgrind"
	@echo "  fuzz              run the config.pbtxt, job spec, HTTP framing, request JSON and gRPC client fuzzers, FUZZ_SECONDS each (default 60)"
	@echo "  format            rewrite C sources with clang-format"
	@echo "  format-check      fail if any C source is not clang-formatted"
	@echo "  bench             run the benchmarks (bench/run-all.sh)"
	@echo "  clean             remove build directories"

deps:
	scripts/install-deps.sh build test

build:
	cmake -S . -B $(BUILD_DIR) -DIMAGEN_WERROR=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: deps build
	BUILD_DIR=$(BUILD_DIR) scripts/run.sh

test: deps build format-check
	ctest --test-dir $(BUILD_DIR) --output-on-failure
	IMAGEN_SERVER_BIN=$(CURDIR)/$(BUILD_DIR)/imagen-server $(PYTHON) -m pytest $(PYTEST_FLAGS) tests/integration

test-unit: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure

test-integration: build
	IMAGEN_SERVER_BIN=$(CURDIR)/$(BUILD_DIR)/imagen-server $(PYTHON) -m pytest $(PYTEST_FLAGS) tests/integration

# The valgrind pass has no -q: the integration fixtures read valgrind's leak
# summary from the server log to confirm nothing was definitely lost.
test-sanitize: build
	cmake -S . -B $(ASAN_BUILD_DIR) -DIMAGEN_SANITIZE=ON -DIMAGEN_WERROR=ON $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD_DIR) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(ASAN_BUILD_DIR) --output-on-failure
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  IMAGEN_SERVER_BIN=$(CURDIR)/$(ASAN_BUILD_DIR)/imagen-server $(PYTHON) -m pytest $(PYTEST_FLAGS) tests/integration
	IMAGEN_TEST_WRAPPER="$(VALGRIND)" \
	  IMAGEN_SERVER_BIN=$(CURDIR)/$(BUILD_DIR)/imagen-server $(PYTHON) -m pytest $(PYTEST_FLAGS) tests/integration

fuzz:
	bash fuzz/run-fuzz.sh config $(FUZZ_SECONDS)
	bash fuzz/run-fuzz.sh job_spec $(FUZZ_SECONDS)
	bash fuzz/run-fuzz.sh http $(FUZZ_SECONDS)
	bash fuzz/run-fuzz.sh jsondoc $(FUZZ_SECONDS)
	bash fuzz/run-fuzz.sh grpc_client $(FUZZ_SECONDS)

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

bench: build
	scripts/install-deps.sh bench
	@if [ -f bench/run-all.sh ]; then \
	  echo bash bench/run-all.sh; bash bench/run-all.sh; \
	else \
	  echo "bench/run-all.sh not present; no benchmarks yet"; \
	fi

clean:
	rm -rf $(BUILD_DIR) $(ASAN_BUILD_DIR)
