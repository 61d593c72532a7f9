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

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

# Opt-in: generates multi-GB checkpoints under bench-data/.
bench: build
	cmake --build $(BUILD_DIR) -j $(JOBS) --target shard_bench quantize_bench convert_bench lora_bench bisect_bench watch_bench
	$(BUILD_DIR)/tests/bench/shard_bench --work-dir bench-data
	$(BUILD_DIR)/tests/bench/quantize_bench --work-dir bench-data
	$(BUILD_DIR)/tests/bench/convert_bench --work-dir bench-data/convert
	$(BUILD_DIR)/tests/bench/lora_bench --work-dir bench-data/lora
	$(BUILD_DIR)/tests/bench/bisect_bench --work-dir bench-data/bisect
	$(BUILD_DIR)/tests/bench/watch_bench --work-dir bench-data/watch

# The GGUF reader, the torch restricted unpickler and the torch checkpoint reader (zip record
# table + pickle) under libFuzzer + AddressSanitizer for FUZZ_SECONDS each (clang, its own build
# tree), seeded with the golden GGUF files and the torch fixtures. A crash leaves its input in
# build-fuzz/ and fails the target.
FUZZ_SECONDS ?= 120
fuzz:
	bash scripts/install-deps.sh --fuzz
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMODELSMITH_FUZZ=ON \
	  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address" -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address"
	cmake --build build-fuzz -j $(JOBS) --target gguf_reader_fuzzer torch_pickle_fuzzer torch_checkpoint_fuzzer
	mkdir -p build-fuzz/corpus/gguf build-fuzz/corpus/torch build-fuzz/corpus/pickle
	cp -n tests/data/golden/gguf/*.gguf build-fuzz/corpus/gguf/
	cp -n tests/data/torch/*.bin tests/data/torch/*.ckpt build-fuzz/corpus/torch/
	python3 scripts/extract_pickles.py tests/data/torch build-fuzz/corpus/pickle
	cd build-fuzz && tests/fuzz/gguf_reader_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -timeout=10 \
	  -rss_limit_mb=2048 corpus/gguf
	cd build-fuzz && tests/fuzz/torch_pickle_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 \
	  -rss_limit_mb=2048 corpus/pickle
	cd build-fuzz && tests/fuzz/torch_checkpoint_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -timeout=10 \
	  -rss_limit_mb=2048 corpus/torch

# The tree is kept formatted by .clang-format; format-check is also a ctest case.
format:
	bash scripts/format.sh
format-check:
	bash scripts/format.sh --check

clean:
	rm -rf $(BUILD_DIR)
