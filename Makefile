# Modelsmith: `make serve` and `make test` work on a bare Debian 12 machine (as root): both
# install what is missing (scripts/install-deps.sh), configure with CMake + Ninja and build.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2
LISTEN ?= 127.0.0.1:50051
METRICS_LISTEN ?= 127.0.0.1:9464
DATA_DIR ?= ./data

.PHONY: deps build serve test bench fuzz format format-check clean

deps:
	bash scripts/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

serve: build
	$(BUILD_DIR)/server/modelsmithd --listen $(LISTEN) --metrics-listen $(METRICS_LISTEN) --data-dir $(DATA_DIR)

# The parser fuzzers run as ctest cases (20 s each) from their own clang tree, built here.
test: build
	JOBS=$(JOBS) bash scripts/fuzz.sh build
	cd $(BUILD_DIR) && MODELSMITH_REQUIRE_FUZZ=1 ctest --output-on-failure -j $(JOBS) --timeout 600

# Opt-in: generates multi-GB checkpoints under bench-data/.
bench: build
	cmake --build $(BUILD_DIR) -j $(JOBS) --target shard_bench quantize_bench convert_bench lora_bench bisect_bench pipeline_bench watch_bench replicas_bench
	$(BUILD_DIR)/tests/bench/shard_bench --work-dir bench-data
	$(BUILD_DIR)/tests/bench/quantize_bench --work-dir bench-data
	$(BUILD_DIR)/tests/bench/convert_bench --work-dir bench-data/convert
	$(BUILD_DIR)/tests/bench/lora_bench --work-dir bench-data/lora
	$(BUILD_DIR)/tests/bench/bisect_bench --work-dir bench-data/bisect
	$(BUILD_DIR)/tests/bench/pipeline_bench --work-dir bench-data/pipeline
	$(BUILD_DIR)/tests/bench/watch_bench --work-dir bench-data/watch
	$(BUILD_DIR)/tests/bench/replicas_bench --work-dir bench-data/replicas

# Every parser fuzzer (GGUF, torch pickle, torch zip, safetensors header, ONNX graph) under
# libFuzzer + AddressSanitizer for FUZZ_SECONDS each (scripts/fuzz.sh: clang, its own build tree
# build-fuzz/, seeded from the test fixtures). A crash keeps its input under
# build-fuzz/artifacts/NAME/ and fails the target.
FUZZ_SECONDS ?= 120
fuzz:
	bash scripts/install-deps.sh
	JOBS=$(JOBS) bash scripts/fuzz.sh build
	for name in $$(bash scripts/fuzz.sh list); do bash scripts/fuzz.sh run $$name $(FUZZ_SECONDS) || exit 1; done

# The tree is kept formatted by .clang-format; format-check is also a ctest case.
format:
	bash scripts/format.sh
format-check:
	bash scripts/format.sh --check

clean:
	rm -rf $(BUILD_DIR)
