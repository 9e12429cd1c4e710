#!/usr/bin/env bash
# Fuzzes tandem's parsers of outside bytes with libFuzzer + ASan + UBSan (tests/fuzz/README.md).
#   scripts/fuzz.sh [--seconds N] [--jobs J] [TARGET...]
# Builds the default build's library (build/, uninstrumented) and the fuzz targets (build-fuzz/,
# clang), then runs each TARGET (default: every tests/fuzz/targets/*.cpp) for N seconds (default
# 60), J targets at a time (default 1), from its seed corpus tests/fuzz/corpus/<target>/ (read
# only; what the run discovers stays in build-fuzz/corpus/<target>/). Prints executions/s,
# coverage (libFuzzer's cov: edges, ft: features) and findings per target; a finding's input is
# saved as build-fuzz/findings/<target>/crash-... (or leak-, timeout-, oom-) and the exit status is
# non-zero. To keep a fixed finding fixed, copy its input into tests/fuzz/corpus/<target>/ (ctest
# replays that directory: fuzz_replay.<target>).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_PER_TARGET=60
JOBS=1
TARGETS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) SECONDS_PER_TARGET="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
if [[ ${#TARGETS[@]} -eq 0 ]]; then
  for f in tests/fuzz/targets/*.cpp; do TARGETS+=("$(basename "$f" .cpp)"); done
fi
for t in "${TARGETS[@]}"; do
  [[ -f tests/fuzz/targets/$t.cpp ]] || { echo "fuzz.sh: no target '$t' (tests/fuzz/targets/$t.cpp)" >&2; exit 2; }
done

export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$ROOT")}"
LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
echo "[fuzz] building build/libtandem_lib.a (the uninstrumented rest of tandem)"
[[ -f build/CMakeCache.txt ]] || cmake -B build -DCMAKE_BUILD_TYPE=Release "${LAUNCHER[@]}" >/dev/null
cmake --build build -j"$(nproc)" --target tandem_lib >/dev/null
echo "[fuzz] building the fuzz targets (build-fuzz, clang, -fsanitize=fuzzer,address,undefined)"
cmake -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" "${LAUNCHER[@]}" -DTANDEM_FUZZ=ON \
  -DTANDEM_TESTS=OFF -DTANDEM_BENCH=OFF -DTANDEM_CUDA="$(grep -q 'TANDEM_CUDA:BOOL=OFF' build/CMakeCache.txt && echo OFF || echo ON)" \
  -DTANDEM_FUZZ_BASE_LIB="$ROOT/build/libtandem_lib.a" >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${TARGETS[@]/#/fuzz_}" >/dev/null

# UBSan aborts with a report; ASan reports leaks at exit (libFuzzer checks for them per input too).
# The targets write each input to a scratch file (parsers read files): on tmpfs when there is one.
[[ -d /dev/shm && -w /dev/shm ]] && export TMPDIR="${TMPDIR:-/dev/shm}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0"
run_one() {
  local t="$1" work="build-fuzz/corpus/$1" out="build-fuzz/findings/$1" log="build-fuzz/logs/$1.log"
  mkdir -p "$work" "$out" "$(dirname "$log")"
  rm -f "$out"/*
  local dict=()
  [[ -f tests/fuzz/dict/$t.dict ]] && dict=(-dict="tests/fuzz/dict/$t.dict")
  # -timeout: an input taking over 10 s is a hang; -rss_limit_mb (and the malloc limit, the same by
  # default): a hostile size field must not make tandem allocate gigabytes.
  set +e
  "build-fuzz/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "${dict[@]}" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1
  echo $? >"$log.rc"
  set -e
}
export -f run_one
export SECONDS_PER_TARGET
echo "[fuzz] ${#TARGETS[@]} targets x ${SECONDS_PER_TARGET}s, $JOBS at a time; logs in build-fuzz/logs/"
printf '%s\n' "${TARGETS[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one {}'

status=0
printf '%-22s %10s %9s %7s %7s %7s %9s\n' target execs exec/s cov ft corpus findings
for t in "${TARGETS[@]}"; do
  log="build-fuzz/logs/$t.log"
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1 || true)
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{print $2}' | tail -1 || true)
  last=$( (grep -E '^#[0-9]+' "$log" || true) | grep ' cov: ' | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  findings=$(find "build-fuzz/findings/$t" -type f | wc -l)
  rc=$(cat "$log.rc")
  if [[ $rc -ne 0 && $findings -eq 0 ]]; then findings="rc=$rc"; fi
  printf '%-22s %10s %9s %7s %7s %7s %9s\n' "$t" "${execs:--}" "${eps:--}" "${cov:--}" "${ft:--}" "${corp:--}" "$findings"
  if [[ $rc -ne 0 || $findings != 0 ]]; then
    status=1
    grep -m3 -E 'ERROR: |FINDING|runtime error|Test unit written' "$log" | sed "s/^/  $t: /" || true
  fi
done
[[ $status -eq 0 ]] && echo "[fuzz] no findings" || echo "[fuzz] FINDINGS: see build-fuzz/findings/ and build-fuzz/logs/"
exit $status
