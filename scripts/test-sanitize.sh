#!/usr/bin/env bash
# `scripts/test.sh --sanitize`: tandem built with AddressSanitizer + UndefinedBehaviorSanitizer
# (build-sanitize/, the system compiler, -O1) running the C++ tests (ctest: unit tests and the
# fuzz corpus replays) and the Python tests that drive the binary through parsing, checkpoints,
# resume and serving. Any sanitizer report fails the run, also one from a tandem process that a
# test expected to fail (reports go to build-sanitize/sanitizer-logs/, checked at the end).
#   scripts/test-sanitize.sh [--ci] [pytest args...]
# --ci: the part CI runs (README "Tests"): only the input-handling code instrumented (the rest from
# build/libtandem_lib.a), the fuzz corpus replays and the Python parsing / checkpoint / resume /
# serving tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CI_PART=0
if [[ "${1:-}" == "--ci" ]]; then CI_PART=1; shift; fi
if [[ $CI_PART -eq 1 ]]; then
  # The code that handles outside input (src/io, tokenizer, data, train, serve, cli, models)
  # instrumented, the kernels and backends from the default build's library (tests/fuzz/fuzz.cmake):
  # minutes to build instead of most of an hour. Its backend options follow build/'s, whose library it links.
  BUILD=build-sanitize-io BIN=tandem_io REPLAY=tandem_fuzz_replay_io
  [[ -f build/libtandem_lib.a ]] || { echo "test-sanitize.sh --ci: build/libtandem_lib.a is missing (build first)" >&2; exit 2; }
  opt() { grep -m1 "^$1:BOOL=" build/CMakeCache.txt | cut -d= -f2 || echo ON; }
  EXTRA=(-DTANDEM_SANITIZE_BASE_LIB="$ROOT/build/libtandem_lib.a" -DTANDEM_CUDA="$(opt TANDEM_CUDA)"
         -DTANDEM_OPENCL="$(opt TANDEM_OPENCL)" -DTANDEM_MPI="$(opt TANDEM_MPI)")
else
  # CUDA, OpenCL and MPI stay out: their runtimes are not built with the sanitizers, and what reads
  # outside bytes is the same code on every backend.
  BUILD=build-sanitize BIN=tandem REPLAY="tandem_tests tandem_fuzz_replay"
  EXTRA=(-DTANDEM_CUDA=OFF -DTANDEM_OPENCL=OFF -DTANDEM_MPI=OFF)
fi
LOGS="$ROOT/$BUILD/sanitizer-logs"
LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
echo "[sanitize] building $BUILD (ASan + UBSan, -O1)"
cmake -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" "${LAUNCHER[@]}" \
  -DTANDEM_SANITIZE=ON -DTANDEM_BENCH=OFF "${EXTRA[@]}" >/dev/null
# shellcheck disable=SC2086
cmake --build "$BUILD" -j"$(nproc)" --target $BIN $REPLAY

rm -rf "$LOGS" && mkdir -p "$LOGS"
# halt_on_error: a UBSan report aborts the process like an ASan one; log_path: reports land in
# files even when a test captured (and expected) the failing process's stderr.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$LOGS/asan:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOGS/ubsan"
export LSAN_OPTIONS="suppressions=$ROOT/tests/sanitizer/lsan.supp:print_suppressions=0"

status=0
echo "[sanitize] C++ tests"
if [[ $CI_PART -eq 1 ]]; then
  ctest --test-dir "$BUILD" --output-on-failure -j2 -R '^fuzz_replay_io\.' || status=1
else
  ctest --test-dir "$BUILD" --output-on-failure -j2 || status=1
fi

echo "[sanitize] Python tests (parsing, checkpoints, resume, serving) against $BUILD/$BIN"
PY_TESTS=(tests/python/test_cli.py tests/python/test_fault_tolerance.py tests/python/test_serve.py
          tests/python/test_tokenizer_hf.py tests/python/test_hf_interop.py)
[[ $CI_PART -eq 1 ]] || PY_TESTS+=(tests/python/test_lr_schedule.py tests/python/test_grad_accum.py
                                   tests/python/test_generate_hf.py tests/python/test_serve_hf.py)
TANDEM_BIN="$ROOT/$BUILD/$BIN" .venv/bin/python -m pytest "${PY_TESTS[@]}" -q -rs "$@" || status=1

if compgen -G "$LOGS/*" >/dev/null; then
  echo "[sanitize] SANITIZER REPORTS:"
  for f in "$LOGS"/*; do echo "== $f"; head -40 "$f"; done
  status=1
else
  echo "[sanitize] no ASan / UBSan / LSan reports"
fi
exit $status
