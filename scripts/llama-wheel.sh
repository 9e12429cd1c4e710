#!/usr/bin/env bash
# llama-cpp-python for the llama.cpp side of bench/bench_serve.sh: built once from its PyPI source
# for this CPU, cached as a wheel, installed into .venv. tandem itself never needs it.
#
#   scripts/llama-wheel.sh                # build the wheel unless cached, then install it into .venv
#   scripts/llama-wheel.sh --build-only   # build (or find) the wheel, install nothing
#   scripts/llama-wheel.sh --rebuild      # build again even if a wheel is cached
#
# The wheel compiles llama.cpp with -march=native (GGML_NATIVE), OpenMP threads, no BLAS, no
# CURL, no llava/mtmd, so it is only valid on this kind of CPU: it is kept in
# $WHEELHOUSE/llama-native-<key>/ where <key> hashes the CPU model and flags, the compiler and the
# version. The build log and the build's wall time (build-seconds.txt) are kept beside it.
# Environment: LLAMA_CPP_PYTHON_VERSION (default 0.3.36), TANDEM_WHEELHOUSE (default
# ~/.cache/tandem/wheelhouse, as scripts/python-env.sh), TANDEM_VENV (default <repo>/.venv),
# CMAKE_BUILD_PARALLEL_LEVEL (default: all cores).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
VENV="${TANDEM_VENV:-$ROOT/.venv}"
WHEELHOUSE="${TANDEM_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/wheelhouse}"
MODE=install
case "${1:-}" in
  --build-only) MODE=build ;;
  --rebuild) MODE=rebuild ;;
  "") ;;
  -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
  *) echo "llama-wheel.sh: unknown option $1" >&2; exit 2 ;;
esac
say() { printf '[llama-wheel] %s\n' "$*"; }

[[ -x "$VENV/bin/python" ]] || { echo "llama-wheel.sh: no venv at $VENV: run scripts/python-env.sh first" >&2; exit 1; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

export CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
if command -v ccache >/dev/null; then
  CMAKE_ARGS+=" -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
fi
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
key="$( { grep -m1 '^model name' /proc/cpuinfo; grep -m1 '^flags' /proc/cpuinfo; c++ --version | head -1;
          echo "$VERSION $CMAKE_ARGS"; } | sha256sum | cut -c1-12)"
DIR="$WHEELHOUSE/llama-native-$key"
mkdir -p "$DIR"

wheel() { ls "$DIR"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1; }
if [[ "$MODE" == rebuild ]]; then rm -f "$DIR"/llama_cpp_python-*.whl; fi
if [[ -n "$(wheel)" ]]; then
  say "cached: $(wheel) (built in $(cat "$DIR/build-seconds.txt" 2>/dev/null || echo '?') s)"
else
  say "building llama-cpp-python $VERSION from PyPI source for this CPU (llama.cpp, $CMAKE_BUILD_PARALLEL_LEVEL jobs;"
  say "  several minutes on 2 cores; log: $DIR/build.log)"
  t0=$(date +%s.%N)
  if ! "${PIP[@]}" wheel -v --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -w "$DIR" \
      --find-links "$WHEELHOUSE" >"$DIR/build.log" 2>&1; then
    tail -30 "$DIR/build.log" >&2
    echo "llama-wheel.sh: the build failed; full log: $DIR/build.log" >&2
    exit 1
  fi
  secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$t0" "$(date +%s.%N)")
  echo "$secs" >"$DIR/build-seconds.txt"
  say "built $(wheel) in $secs s"
fi

if [[ "$MODE" != build ]]; then
  "${PIP[@]}" install -q --no-index --find-links "$DIR" --find-links "$WHEELHOUSE" "llama-cpp-python==$VERSION"
  say "installed into $VENV: $("$VENV/bin/python" -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__)')"
fi
