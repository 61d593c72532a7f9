# Modelsmith: `make serve` and `make test` work on a bare Debian 12 machine (as root): both
# install what is missing (scripts/install-deps.sh), configure with CMake + Ninja and build.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2
LISTEN ?= 127.0.0.1:50051
METRICS_LISTEN ?= 127.0.0.1:9464
DATA_DIR ?= ./data

.PHONY: deps build serve test bench clean

deps:
	bash scripts/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

serve: build
	$(BUILD_DIR)/server/modelsmithd --listen $(LISTEN) --metrics-listen $(METRICS_LISTEN) --data-dir $(DATA_DIR)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

# Opt-in: generates multi-GB checkpoints under bench-data/.
bench: build
	cmake --build $(BUILD_DIR) -j $(JOBS) --target shard_bench quantize_bench
	$(BUILD_DIR)/tests/bench/shard_bench --work-dir bench-data
	$(BUILD_DIR)/tests/bench/quantize_bench --work-dir bench-data

clean:
	rm -rf $(BUILD_DIR)
