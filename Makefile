# Thin wrapper over CMake. `make run` is the main job, `make test` builds and runs the tests.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: all deps build run classify test test-asan test-valgrind fuzz corpus corpus-s2s bench install clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: train the default MoE language model for a few minutes (MINUTES=3), evaluate,
# sample, plot.
run: build
	MOE=$(BUILD)/moe bash scripts/main.sh

# The large English corpus (about 113 MB, from Debian's dictionaries and documentation) for the
# big models: runs/english.txt, selected with `moe train --data english`.
corpus:
	@bash scripts/deps.sh --corpus
	python3 scripts/corpus.py runs/english.txt

# The sentence corpora of the translation model (seconds): runs/s2s/ding.{de,en}, the Ding
# dictionary's headwords and example sentences of 6 to 30 German words, and
# runs/s2s/messages.{de,en}, the German message catalogues of the installed packages (4 to 40
# words); for `moe seq2seq train --src runs/s2s/ding.de --tgt runs/s2s/ding.en --max-words 40`.
corpus-s2s: deps
	@bash scripts/deps.sh --s2s
	python3 scripts/s2s_corpus.py ding runs/s2s
	python3 scripts/s2s_corpus.py messages runs/s2s

# The Fashion-MNIST MoE classifier demo (about a minute).
classify: build
	./$(BUILD)/moe classify

test: build
	@bash scripts/deps.sh --python
	cd $(BUILD) && ctest --output-on-failure

# The same tests under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	@cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DMOE_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD)-asan -j $(JOBS)
	cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure

# The header, libmoe.a, libmoe.so, the moe command, moe.pc and the CMake package under PREFIX.
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

bench: build
	bash bench/run_layer_bench.sh

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-valgrind $(BUILD)-fuzz

# The loaders' fuzz targets (tests/fuzz) under libFuzzer + ASan + UBSan for FUZZ_SECONDS in all,
# shared out over the targets (scripts/fuzz.sh); a finding fails the run and is kept under
# $(BUILD)-fuzz/findings, to be fixed and added to tests/fuzz/regress/NAME.
FUZZ_SECONDS ?= 60
fuzz: deps
	@command -v clang >/dev/null && [ -n "$$(ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null)" ] \
	  || bash scripts/deps.sh --fuzz
	@CC=clang cmake -S . -B $(BUILD)-fuzz -DCMAKE_BUILD_TYPE=Debug -DMOE_FUZZ=ON -DMOE_MPI=OFF -DMOE_OPENMP=OFF $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD)-fuzz -j $(JOBS) --target $$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$$//')
	bash scripts/fuzz.sh $(BUILD)-fuzz $(FUZZ_SECONDS)

# Memory errors and leaks under valgrind (the fast tests; gradcheck is covered by ASan). Its own
# build without -march=native: valgrind 3.19 cannot run AVX-512 instructions. Idle OpenMP threads
# sleep (OMP_WAIT_POLICY=passive): valgrind runs one thread at a time, and a spinning one only
# takes turns away from the working one.
VALGRIND_TESTS = test_api test_fused test_bf16 test_safetensors test_idx test_golden test_textdata test_lstm test_optim test_s2s test_s2s_parity test_errors
test-valgrind: deps
	@command -v valgrind >/dev/null || bash scripts/deps.sh --valgrind
	@cmake -S . -B $(BUILD)-valgrind -DCMAKE_BUILD_TYPE=Release -DMOE_NATIVE=OFF $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD)-valgrind -j $(JOBS)
	@for t in $(VALGRIND_TESTS); do \
	  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite \
	    $(BUILD)-valgrind/tests/$$t tests/golden > $(BUILD)-valgrind/valgrind-$$t.log 2>&1; rc=$$?; \
	  echo "valgrind: $$(grep ' passed, ' $(BUILD)-valgrind/valgrind-$$t.log)"; \
	  if [ $$rc -ne 0 ]; then cat $(BUILD)-valgrind/valgrind-$$t.log; echo "valgrind: $$t failed ($$rc)"; exit 1; fi; \
	done
