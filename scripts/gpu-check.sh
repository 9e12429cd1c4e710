#!/usr/bin/env bash
# The CUDA backend on a machine with an NVIDIA GPU, in one go (under 8 minutes on 16 cores):
#   1. build build-gpu/ with the CUDA backend (tandem only), taking from the bundle in .device/
#      (scripts/device-bundle.sh) every library the system lacks; ISA baseline x86-64-v3
#   2. tandem backends: the cuda line must list a usable device
#   3. tandem conform --backend cuda (f32, bf16, q8_0): every case must PASS (bf16: UNSUPPORTED only
#      for the integer-output ops)
#   4. tandem parity cpu,cuda: baby-gpt (char data) and ds-tiny (BPE data: MLA, MoE, MTP)
#   5. greedy decoding cpu vs cuda (attention_cached for GPT-2, attention_latent for DeepSeek)
#   5b. NCCL: 5 baby-gpt steps through NCCL's all-reduce (under mpirun -np 1 where MPI is
#      installed, else one process with a one-rank communicator) must give the losses of --comm single
#   6. a training benchmark on cuda: gpt2-124m, batch 16 x 1024: tokens/s and MFU (counted FLOPs
#      against the GPU's FP32 peak), plus a per-op profile of a few steps
# The report, in $OUT (default gpu-check-report/): REPORT.md (every figure, and the end of the log
# of every step that failed), conform.json, conform-bf16.json, logs.tar.gz (every log). Each file stays under 16 MiB.
# Exit status: 0 when every check passed; 1 when one failed; 2 when there is no NVIDIA GPU or nvcc.
#
# --rehearse (no GPU needed; CI runs it): in a private mount namespace where this machine's copies
# of the bundled packages, OpenMPI and GoogleTest are hidden (an overlay on /usr), build
# build-rehearse/ exactly as on the GPU machine, name every library taken from the bundle, run the
# CPU-only parts (backends, conform --backend cpu, a short training and generation on the CPU, and
# the clean one-line error of --backend cuda), and stop at "no GPU". Exit 0 when all of that passed.
#
# Environment: OUT (report dir), JOBS (build parallelism, default nproc), BUDGET_S (the whole
# check's time limit, default 450, 3600 for --rehearse: steps that would pass it are cut short; the
# report is written anyway), TANDEM_ISA (default
# x86-64-v3; native for -march=native), CUDA_ARCH (default: the GPU's compute capability, else
# 90), BENCH_STEPS (default 25), BENCH_BATCH (default 16), BENCH_CONFIG (default gpt2-124m; any
# GPT-2 config), PARITY_STEPS (default 100), DS_PARITY_STEPS (default 30), DECODE_STEPS (training
# steps before decoding, default 30), BUILD_DIR (default build-gpu, build-rehearse), TANDEM_BIN (use
# this binary instead of building).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REHEARSE=0
case "${1:-}" in
  "") ;;
  --rehearse) REHEARSE=1 ;;
  -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: scripts/gpu-check.sh [--rehearse]" >&2; exit 64 ;;
esac

# The rehearsal runs in its own mount namespace: what it hides there stays hidden from it alone.
if (( REHEARSE )) && [[ -z "${TANDEM_REHEARSAL_NS:-}" ]]; then
  if ! unshare -m --propagation private true 2>/dev/null; then
    echo "gpu-check --rehearse: cannot make a private mount namespace (unshare -m needs root): without one the" \
      "system's copies of the bundled packages cannot be hidden" >&2
    exit 1
  fi
  exec env TANDEM_REHEARSAL_NS=1 unshare -m --propagation private "$0" --rehearse
fi

if (( REHEARSE )); then
  BUILD="${BUILD_DIR:-build-rehearse}"
  OUT="${OUT:-$BUILD/report}"
else
  BUILD="${BUILD_DIR:-build-gpu}"
  OUT="${OUT:-gpu-check-report}"
fi
mkdir -p "$OUT" "$BUILD"
OUT="$(cd "$OUT" && pwd)"
JOBS="${JOBS:-$(nproc)}"
BUDGET_S="${BUDGET_S:-$( ((REHEARSE)) && echo 3600 || echo 450)}"  # the rehearsal: a CI machine's 2 cores
BENCH_STEPS="${BENCH_STEPS:-25}"
BENCH_BATCH="${BENCH_BATCH:-16}"
PARITY_STEPS="${PARITY_STEPS:-100}"
BENCH_CONFIG="${BENCH_CONFIG:-gpt2-124m}"
DS_PARITY_STEPS="${DS_PARITY_STEPS:-30}"
DECODE_STEPS="${DECODE_STEPS:-30}"
WORK="$ROOT/$BUILD/work"  # data, runs and logs: only the report goes to $OUT
LOGS="$WORK/logs"
BIN="${TANDEM_BIN:-$ROOT/$BUILD/tandem}"
REPORT="$OUT/REPORT.md"
START=$(date +%s)
FAILED=0
BUNDLE_DIR="$ROOT/.device"
DEPS="$ROOT/$BUILD/deps"  # the bundle's groups unpacked: dev/ (headers, link-time libraries), rt/

rm -rf "$WORK" "$OUT/REPORT.md" "$OUT/conform.json" "$OUT/conform-bf16.json" "$OUT/logs.tar.gz" "$OUT/summary.txt" "$OUT"/*.log
mkdir -p "$LOGS"
: > "$WORK/summary.txt"
elapsed() { echo $(( $(date +%s) - START )); }

# Packs the logs into $OUT/logs.tar.gz and keeps every file in $OUT under 16 MiB (the ends kept).
finish_report() {
  (cd "$WORK" && tar -czf "$OUT/logs.tar.gz" logs)
  if (( $(stat -c %s "$OUT/logs.tar.gz") > 15 * 1048576 )); then  # keep the end of each log
    for f in "$LOGS"/*.log; do tail -c 1048576 "$f" > "$f.tail" && mv "$f.tail" "$f"; done
    (cd "$WORK" && tar -czf "$OUT/logs.tar.gz" logs)
  fi
  for f in "$OUT"/*; do
    if [[ -f "$f" ]] && (( $(stat -c %s "$f") > 15 * 1048576 )); then
      tail -c $(( 15 * 1048576 )) "$f" > "$f.tail" && mv "$f.tail" "$f"
    fi
  done
}

die_no_gpu() {
  echo "gpu-check: $1" >&2
  printf '# gpu-check: not run\n\n%s\n' "$1" > "$REPORT"
  finish_report
  exit 2
}
HAVE_GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then HAVE_GPU=1; fi
if (( !REHEARSE )); then
  (( HAVE_GPU )) || die_no_gpu "no NVIDIA GPU on this machine (nvidia-smi is missing or lists no GPU); run this where one is."
  if ! command -v nvcc >/dev/null 2>&1 && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
    die_no_gpu "nvcc not found (install the CUDA toolkit, or put /usr/local/cuda/bin on PATH)."
  fi
fi
command -v nvcc >/dev/null 2>&1 || [[ ! -x /usr/local/cuda/bin/nvcc ]] || export PATH="/usr/local/cuda/bin:$PATH"
GPU_LINE="$( (( HAVE_GPU )) && nvidia-smi -L | head -1)"

# step NAME TIMEOUT_S CMD...: runs CMD with its output in $LOGS/NAME.log; records PASS/FAIL/TIMEOUT.
# The timeout shrinks to what is left of BUDGET_S (less 20 s for the report).
step() {
  local name="$1" limit="$2"
  shift 2
  local t0=$(date +%s) rc left=$(( BUDGET_S - 20 - $(elapsed) ))
  (( limit <= left )) || limit=$left
  if (( limit < 5 )); then
    printf '| %s | SKIPPED (BUDGET_S=%s spent) | 0 s |\n' "$name" "$BUDGET_S" >> "$WORK/summary.txt"
    echo "[gpu-check] $name: skipped, the time budget is spent"
    FAILED=1
    return 1
  fi
  echo "[gpu-check] $name ($(elapsed) s elapsed)"
  timeout -k 20 "$limit" bash -c '"$@"' _ "$@" > "$LOGS/$name.log" 2>&1  # bash -c: the exported functions work too
  rc=$?
  local dt=$(( $(date +%s) - t0 )) status=PASS
  if (( rc == 124 || rc == 137 )); then status="TIMEOUT (${limit} s)"; FAILED=1
  elif (( rc != 0 )); then status="FAIL (exit $rc)"; FAILED=1; fi
  printf '| %s | %s | %d s |\n' "$name" "$status" "$dt" >> "$WORK/summary.txt"
  echo "[gpu-check] $name: $status in ${dt} s"
  return $rc
}
note() { echo "[gpu-check] $*"; echo "$*" >> "$WORK/notes.txt"; }

# --- The rehearsal hides this machine's copies of what the bundle provides -----------------------
# An overlay on /usr (its changes in a tmpfs) from which every file of those packages is deleted;
# the base libraries that any machine has (libssl3, zlib1g, libbrotli1, libpcre2-8-0: cmake, grep
# and Python need them) stay.
hide_system_copies() {
  local pkgs=() p
  while read -r p; do pkgs+=("$p"); done < <(dpkg-query -W -f '${db:Status-Status} ${Package}\n' 2>/dev/null |
    awk '$1 == "installed" {print $2}' |
    grep -E '^(nlohmann-json3-dev|libcli11-dev|libopenblas.*|libblas.*|liblapack.*|libxxhash.*|libpcre2-dev|libcpp-httplib.*|libssl-dev|zlib1g-dev|libbrotli-dev|pkgconf.*|pkg-config|libpkgconf.*|libgfortran5|libquadmath0|.*openmpi.*|mpi-default-.*|libgtest-dev|libgmock-dev|googletest)$')
  local t; t="$(mktemp -d)"
  mount -t tmpfs tmpfs "$t" && mkdir "$t/upper" "$t/work" "$t/usr" &&
    mount -t overlay overlay -o "lowerdir=/usr,upperdir=$t/upper,workdir=$t/work" "$t/usr" || return 1
  dpkg -L "${pkgs[@]}" 2>/dev/null | python3 -c '
import os, sys
root, n = sys.argv[1], 0
for line in sys.stdin:
    p = line.strip()
    if not p.startswith("/"):
        continue
    p = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))  # /lib -> /usr/lib
    if not p.startswith("/usr/"):
        continue
    q = os.path.join(root, p[len("/usr/"):])
    if os.path.islink(q) or os.path.isfile(q):
        os.remove(q)
        n += 1
print(n)' "$t/usr" > "$t/count" || return 1
  mount --bind "$t/usr" /usr || return 1
  # Links left dangling (alternatives such as mpirun, libblas.so.3) go too.
  find /usr/bin /usr/lib/x86_64-linux-gnu -maxdepth 2 -xtype l -delete 2>/dev/null
  note "rehearsal: hid $(cat "$t/count") files of ${#pkgs[@]} installed packages under an overlay of /usr: ${pkgs[*]}"
  local f
  for f in /usr/include/nlohmann/json.hpp /usr/include/pcre2.h /usr/include/xxhash.h /usr/include/httplib.h \
    /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h /usr/bin/pkg-config /usr/bin/mpirun; do
    [[ ! -e "$f" ]] || { echo "gpu-check --rehearse: $f is still visible after hiding" >&2; return 1; }
  done
}

# --- Dependencies: the system's where it has them, else the bundle's ------------------------------
CXX_BIN="${CXX:-c++}"
have_header() { echo "#include <$1>" | "$CXX_BIN" -DPCRE2_CODE_UNIT_WIDTH=8 -E -x c++ - >/dev/null 2>&1; }
have_lib() { [[ "$("$CXX_BIN" -print-file-name="lib$1.so")" == /* ]]; }
have_soname() {  # a runtime library the dynamic loader would find
  local p
  for p in $(/sbin/ldconfig -p 2>/dev/null | awk -v s="$1" '$1 == s {print $NF}') "$("$CXX_BIN" -print-file-name="$1")"; do
    [[ "$p" == /* && -e "$p" ]] && return 0
  done
  return 1
}
system_has() {  # group name from .device/groups.tsv
  case "$1" in
    nlohmann_json) have_header nlohmann/json.hpp ;;
    CLI11) have_header CLI/CLI.hpp ;;
    openblas) [[ -e /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so &&
                 -e /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h ]] ;;  # CMakeLists.txt's paths
    xxhash) have_header xxhash.h && have_lib xxhash ;;
    pcre2) have_header pcre2.h && have_lib pcre2-8 ;;
    cpp-httplib) command -v pkg-config >/dev/null && pkg-config --exists cpp-httplib ;;
    pkg-config) command -v pkg-config >/dev/null ;;
    *.so.*) have_soname "$1" ;;
    *) return 1 ;;
  esac
}
unpack_deb() {  # DEB DEST: dpkg-deb, or Python where dpkg is missing (never over /)
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$2"; return; fi
  python3 - "$1" "$2" <<'PY'
import io, sys, tarfile
deb, dest = sys.argv[1], sys.argv[2]
data = open(deb, "rb").read()
assert data[:8] == b"!<arch>\n", deb + ": not a .deb"
at = 8
while at < len(data):
    name, size = data[at:at + 16].decode().strip().rstrip("/"), int(data[at + 48:at + 58])
    if name.startswith("data.tar"):
        with tarfile.open(fileobj=io.BytesIO(data[at + 60:at + 60 + size])) as t:
            t.extractall(dest, **({"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}))
        sys.exit(0)
    at += 60 + size + (size & 1)
sys.exit(deb + ": no data.tar member")
PY
}
# Absolute links point into the prefix; .pc files name the prefix.
relocate() {
  local prefix="$1" l t
  while IFS= read -r l; do
    t="$(readlink "$l")"
    [[ "$t" == /* ]] && ln -sfn "$prefix$t" "$l"
  done < <(find "$prefix" -type l)
  find "$prefix" -name '*.pc' -exec sed -i -E "s#^(prefix|exec_prefix|libdir|includedir)=/usr#\1=$prefix/usr#" {} +
}
CMAKE_DEP_ARGS=()
DEP_CXX_FLAGS=""
FROM_BUNDLE=()
resolve_deps() {
  local missing=() dev=() rt=() group kind pkgs files line
  while IFS=$'\t' read -r group kind pkgs files; do
    [[ "$kind" == rt ]] && continue
    system_has "$group" || missing+=("$group")
  done < <(cat "$BUNDLE_DIR/groups.tsv" 2>/dev/null)
  if [[ ! -f "$BUNDLE_DIR/groups.tsv" ]]; then
    local g
    for g in nlohmann_json CLI11 openblas xxhash pcre2 cpp-httplib pkg-config; do system_has "$g" || missing+=("$g"); done
    if ((${#missing[@]})); then
      echo "gpu-check: this machine lacks ${missing[*]} and there is no bundle in $BUNDLE_DIR:" \
        "run scripts/device-bundle.sh on a Debian 12 machine and let .device travel with the tree" >&2
      return 1
    fi
    note "dependencies: all from the system (no bundle needed)"
    return 0
  fi
  if (( ${#missing[@]} == 0 )); then note "dependencies: all from the system (the bundle is not needed)"; return 0; fi
  # The bundled binaries need this glibc and libstdc++.
  local need_glibc need_cxx have_glibc libstdcxx
  need_glibc="$(awk '$1 == "GLIBC" {print $2}' "$BUNDLE_DIR/abi.txt")"
  need_cxx="$(awk '$1 == "GLIBCXX" {print $2}' "$BUNDLE_DIR/abi.txt")"
  have_glibc="$(getconf GNU_LIBC_VERSION | awk '{print $2}')"
  if [[ "$(printf '%s\n%s\n' "$need_glibc" "$have_glibc" | sort -V | head -1)" != "$need_glibc" ]]; then
    echo "gpu-check: the bundle's libraries need glibc >= $need_glibc, this machine has $have_glibc" >&2
    return 1
  fi
  libstdcxx="$(readlink -f "$("$CXX_BIN" -print-file-name=libstdc++.so.6)")"
  if [[ -n "$need_cxx" ]] && ! grep -qa "GLIBCXX_$need_cxx" "$libstdcxx" 2>/dev/null; then
    echo "gpu-check: the bundle's libraries need libstdc++ with GLIBCXX_$need_cxx; $libstdcxx lacks it" >&2
    return 1
  fi
  rm -rf "$DEPS"
  mkdir -p "$DEPS/dev" "$DEPS/rt"
  while IFS=$'\t' read -r group kind pkgs files; do
    local dest=""
    case "$kind" in
      dev) [[ " ${missing[*]} " == *" $group "* ]] && dest="$DEPS/dev" ;;
      tool) [[ " ${missing[*]} " == *" $group "* ]] && dest="$DEPS/rt" ;;
      rt) system_has "$group" || dest="$DEPS/rt" ;;
    esac
    [[ -n "$dest" ]] || continue
    local f
    for f in $files; do
      [[ -s "$BUNDLE_DIR/debs/$f" ]] || { echo "gpu-check: the bundle lacks $f (rerun scripts/device-bundle.sh)" >&2; return 1; }
      unpack_deb "$BUNDLE_DIR/debs/$f" "$dest" || { echo "gpu-check: cannot unpack $f" >&2; return 1; }
    done
    FROM_BUNDLE+=("$group ($pkgs)")
  done < "$BUNDLE_DIR/groups.tsv"
  relocate "$DEPS/dev"
  relocate "$DEPS/rt"
  local dev="$DEPS/dev/usr" multi=x86_64-linux-gnu
  CMAKE_DEP_ARGS+=(-DCMAKE_PREFIX_PATH="$dev")
  DEP_CXX_FLAGS="-isystem $dev/include -isystem $dev/include/$multi"
  if [[ -e "$dev/lib/$multi/openblas-openmp/libopenblas.so" ]]; then
    CMAKE_DEP_ARGS+=(-DOPENBLAS_LIB="$dev/lib/$multi/openblas-openmp/libopenblas.so"
                     -DOPENBLAS_INCLUDE="$dev/include/$multi/openblas-openmp")
  fi
  [[ ! -x "$DEPS/rt/usr/bin/pkgconf" ]] || CMAKE_DEP_ARGS+=(-DPKG_CONFIG_EXECUTABLE="$DEPS/rt/usr/bin/pkgconf")
  export PKG_CONFIG_PATH="$dev/lib/$multi/pkgconfig:$dev/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  # Only libraries this system lacks are in rt/: nothing of the system's is shadowed. The dev
  # libraries are found through the binary's RUNPATH.
  export LD_LIBRARY_PATH="$DEPS/rt/usr/lib/$multi${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  note "dependencies from the bundle ($BUNDLE_DIR): ${FROM_BUNDLE[*]}"
}

# NCCL: CMake looks in the CUDA toolkit; elsewhere PyTorch's nvidia-nccl wheel has it.
find_nccl() {
  local cuda_root; cuda_root="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  local d
  for d in "$cuda_root/lib64" "$cuda_root/lib" "$cuda_root/targets/x86_64-linux/lib" /usr/lib/x86_64-linux-gnu; do
    [[ -e "$d/libnccl.so" ]] && { note "NCCL: $d/libnccl.so"; return 0; }
  done
  d="$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null)"
  if [[ -n "$d" && -e "$d/include/nccl.h" ]] && ls "$d"/lib/libnccl.so* >/dev/null 2>&1; then
    local lib; lib="$(ls "$d"/lib/libnccl.so* | head -1)"
    CMAKE_DEP_ARGS+=(-DNCCL_LIB="$lib" -DNCCL_INCLUDE="$d/include")
    export LD_LIBRARY_PATH="$d/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    note "NCCL: PyTorch's wheel, $lib"
    return 0
  fi
  note "NCCL: not found (neither in the CUDA toolkit nor in Python's nvidia.nccl): the build has no NCCL"
}

# 1. build
BUILT=1
if [[ -n "${TANDEM_BIN:-}" ]]; then
  note "using $BIN (TANDEM_BIN): no build"
else
  (( REHEARSE )) && { hide_system_copies || { echo "gpu-check --rehearse: hiding the system's packages failed" >&2; exit 1; }; }
  if ! resolve_deps 2> "$LOGS/dependencies.log"; then
    cat "$LOGS/dependencies.log" >&2
    printf '| dependencies | FAIL | 0 s |\n' >> "$WORK/summary.txt"
    FAILED=1
    BUILT=0
  fi
  ISA="${TANDEM_ISA:-x86-64-v3}"
  if [[ "$ISA" == native ]]; then
    ISA_ARGS=(-DTANDEM_NATIVE=ON)
  else
    isa_flag="-march=$ISA"
    # Compilers older than GCC 11 / Clang 12 do not know the level names: x86-64-v3 spelled out.
    if ! "$CXX_BIN" "$isa_flag" -E -x c++ /dev/null >/dev/null 2>&1 && [[ "$ISA" == x86-64-v3 ]]; then
      isa_flag="-march=haswell -mtune=generic"
    fi
    ISA_ARGS=(-DTANDEM_NATIVE=OFF)
    DEP_CXX_FLAGS="$isa_flag $DEP_CXX_FLAGS"
  fi
  CUDA_ARCH="${CUDA_ARCH:-$( (( HAVE_GPU )) && nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')}"
  CUDA_ARCH="${CUDA_ARCH:-90}"
  CUDA_ARGS=()
  if command -v nvcc >/dev/null 2>&1; then
    CUDA_ARGS=(-DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH")
    find_nccl
  elif (( REHEARSE )); then
    note "rehearsal: no nvcc here, so the build has no CUDA backend"
  fi
  LAUNCH=()
  if command -v ccache >/dev/null 2>&1; then
    LAUNCH=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  fi
  GEN=()
  [[ -f "$BUILD/CMakeCache.txt" ]] || ! command -v ninja >/dev/null || GEN=(-G Ninja)
  note "build: $BUILD, ${ISA_ARGS[*]} CXX flags '$DEP_CXX_FLAGS', CUDA architectures $CUDA_ARCH, $JOBS jobs"
  if (( BUILT )); then
    step configure 120 cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DTANDEM_TESTS=OFF -DTANDEM_BENCH=OFF \
      -DTANDEM_OPENCL=OFF -DTANDEM_CUDA=ON "${ISA_ARGS[@]}" -DCMAKE_CXX_FLAGS="$DEP_CXX_FLAGS" "${CUDA_ARGS[@]}" \
      "${LAUNCH[@]}" "${CMAKE_DEP_ARGS[@]}" || BUILT=0
  fi
  if (( BUILT && !REHEARSE )) && ! grep -q TANDEM_HAVE_CUDA "$BUILD/compile_commands.json" 2>/dev/null; then
    echo "the configure step found no CUDA toolkit (see configure.log)" >> "$LOGS/configure.log"
    printf '| cuda_configured | FAIL | 0 s |\n' >> "$WORK/summary.txt"
    FAILED=1
    BUILT=0
  fi
  if (( BUILT )); then
    step build "$BUDGET_S" cmake --build "$BUILD" -j"$JOBS" --target tandem || BUILT=0
  fi
  if (( BUILT )); then
    # Every library resolves, and those from the bundle are named.
    ldd "$BIN" > "$LOGS/ldd.log" 2>&1
    if grep -q 'not found' "$LOGS/ldd.log"; then
      note "ldd: $(grep 'not found' "$LOGS/ldd.log" | awk '{print $1}' | tr '\n' ' ')not found"
      printf '| libraries | FAIL (not found: see ldd.log) | 0 s |\n' >> "$WORK/summary.txt"
      FAILED=1
      BUILT=0
    fi
    from="$(grep -F "$DEPS/" "$LOGS/ldd.log" | awk '{print $1}' | tr '\n' ' ')"
    note "libraries the binary loads from the bundle: ${from:-none}"
  fi
  if (( !BUILT )); then
    echo "gpu-check: the build failed; see $LOGS/" >&2
  fi
fi
ls "$LOGS"/dependencies.log >/dev/null 2>&1 && [[ ! -s "$LOGS/dependencies.log" ]] && rm -f "$LOGS/dependencies.log"

# The rehearsal: the CPU-only parts, then a clean stop where the GPU would start.
if (( REHEARSE )); then
  if (( BUILT )); then
    step backends 60 "$BIN" backends
    step conform_cpu 120 "$BIN" conform --backend cpu --dtype f32
    step prepare_char 60 "$BIN" prepare --input data/tinyshakespeare.txt --tokenizer char --out "$WORK/shk"
    step train_cpu 120 "$BIN" train --config baby-gpt --data "$WORK/shk" --out "$WORK/run-cpu" --steps 3 --backend cpu \
      --set batch_size=4 --set block_size=64 --set eval_steps=2
    step generate_cpu 60 "$BIN" generate --model "$WORK/run-cpu" --prompt "ROMEO:" --max-tokens 16 --temperature 0 --backend cpu
    if grep -q TANDEM_HAVE_CUDA "$BUILD/compile_commands.json"; then
      # Without a GPU, --backend cuda (and NCCL) must stop with one error line.
      cuda_stops_cleanly() {
        local rc
        "$@" > "$WORK/nogpu.txt" 2>&1
        rc=$?
        cat "$WORK/nogpu.txt"
        (( rc != 0 && rc < 128 )) && (( $(wc -l < "$WORK/nogpu.txt") <= 2 )) && grep -qi 'cuda\|gpu\|device' "$WORK/nogpu.txt"
      }
      export -f cuda_stops_cleanly
      export WORK
      step cuda_without_gpu 60 cuda_stops_cleanly "$BIN" train --config baby-gpt --data "$WORK/shk" --out "$WORK/run-nccl" \
        --steps 1 --backend cuda --comm nccl
    fi
  fi
  {
    echo "# gpu-check --rehearse"
    echo
    echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname); total $(elapsed) s; verdict: $([[ $FAILED == 0 ]] && echo '**PASS** (stopped at: no GPU)' || echo '**FAIL**')"
    sed 's/^/- /' "$WORK/notes.txt"
    echo
    echo "| step | status | time |"
    echo "|---|---|---|"
    cat "$WORK/summary.txt"
    for f in "$LOGS"/*.log; do
      n="$(basename "$f" .log)"
      grep -q "^| $n | PASS" "$WORK/summary.txt" && continue
      [[ "$n" == ldd ]] && continue
      printf '\n## %s (last 30 lines)\n\n```\n' "$n"; tail -30 "$f"; printf '```\n'
    done
  } > "$REPORT"
  finish_report
  cat "$REPORT" | sed -n '1,/^| step/p' | head -30 >&2
  echo "[gpu-check] rehearsal: no GPU, stopping here ($(elapsed) s); report: $REPORT" >&2
  exit $FAILED
fi

export BIN WORK LOGS DECODE_STEPS
if [[ $BUILT == 1 && -x "$BIN" ]]; then
  # 2. devices
  step backends 60 bash -c "'$BIN' backends && '$BIN' backends | grep -A1 '^cuda$' | grep -q 'device 0: '"

  # 3. conformance, every op in isolation (TANDEM_CUDA_SYNC=1: a kernel fault is pinned to its node)
  step conform 240 env TANDEM_CUDA_SYNC=1 "$BIN" conform --backend cuda --dtype f32 --json "$OUT/conform.json"
  # bf16 rows (cuBLAS's bf16 GEMM, the cast kernel, bf16 storage elsewhere) and q8_0 rows
  step conform_bf16 240 env TANDEM_CUDA_SYNC=1 "$BIN" conform --backend cuda --dtype bf16 --json "$OUT/conform-bf16.json"
  step conform_q8_0 60 env TANDEM_CUDA_SYNC=1 "$BIN" conform --backend cuda --dtype q8_0

  # 4. parity against the CPU: same init, same batches
  step prepare_char 60 "$BIN" prepare --input data/tinyshakespeare.txt --tokenizer char --out "$WORK/shk"
  step prepare_bpe 180 "$BIN" prepare --input data/tinyshakespeare.txt --tokenizer bpe:1024 --out "$WORK/shk-bpe"
  # Two backends in one process: idle OpenMP workers must not spin on the cores the GPU's host thread needs.
  export OMP_WAIT_POLICY=passive
  step parity_baby_gpt 240 "$BIN" parity --config baby-gpt --data "$WORK/shk" --backends cpu,cuda --steps "$PARITY_STEPS"
  step parity_ds_tiny 240 "$BIN" parity --config ds-tiny --data "$WORK/shk-bpe" --backends cpu,cuda \
    --steps "$DS_PARITY_STEPS" --set batch_size=4 --set block_size=64

  # 5. decoding: train briefly on cuda, then greedy samples on both backends must agree
  decode_check() {  # config data tag
    local cfg="$1" data="$2" tag="$3"
    "$BIN" train --config "$cfg" --data "$data" --out "$WORK/run-$tag" --steps "$DECODE_STEPS" --backend cuda \
      --set batch_size=4 || return 1
    "$BIN" generate --model "$WORK/run-$tag" --prompt "ROMEO:" --max-tokens 64 --temperature 0 --backend cpu > "$WORK/gen-$tag-cpu.txt" || return 1
    "$BIN" generate --model "$WORK/run-$tag" --prompt "ROMEO:" --max-tokens 64 --temperature 0 --backend cuda > "$WORK/gen-$tag-cuda.txt" || return 1
    echo "--- cpu:"; cat "$WORK/gen-$tag-cpu.txt"; echo; echo "--- cuda:"; cat "$WORK/gen-$tag-cuda.txt"; echo
    cmp -s "$WORK/gen-$tag-cpu.txt" "$WORK/gen-$tag-cuda.txt" || { echo "greedy outputs differ"; return 1; }
  }
  export -f decode_check
  step decode_gpt2 180 decode_check baby-gpt "$WORK/shk" gpt2
  step decode_deepseek 180 decode_check ds-tiny "$WORK/shk-bpe" ds

  # 5b. NCCL smoke run (src/dist): the gradients of 5 baby-gpt steps through ncclAllReduce on the
  # GPU, one rank: under mpirun where MPI is installed (the id shared through MPI), else one process
  # that makes its one-rank communicator from ncclGetUniqueId itself. A one-rank sum is a copy, so
  # the losses must equal those of --comm single bit for bit.
  nccl_check() {  # launcher...
    local args=(train --config baby-gpt --data "$WORK/shk" --steps 5 --backend cuda --set batch_size=4 --set eval_interval=100000)
    "$BIN" "${args[@]}" --out "$WORK/nccl-single" --comm single || return 1
    NCCL_DEBUG=INFO "$@" "$BIN" "${args[@]}" --out "$WORK/nccl" --comm nccl || return 1
    grep -E 'NCCL version|Init COMPLETE' "$LOGS/nccl_smoke.log" | head -3 > "$WORK/nccl-lines.txt"
    [[ -s "$WORK/nccl-lines.txt" ]] || { echo "no NCCL initialisation in the log (NCCL_DEBUG=INFO)"; return 1; }
    python3 - "$WORK/nccl-single/metrics.jsonl" "$WORK/nccl/metrics.jsonl" <<'PY'
import json, sys
a, b = ([r["loss"] for r in map(json.loads, open(p)) if "loss" in r and "event" not in r] for p in sys.argv[1:])
print("losses, --comm single:", a)
print("losses, --comm nccl:  ", b)
sys.exit(0 if a == b and len(a) == 5 else "the losses differ")
PY
  }
  export -f nccl_check
  if ! grep -q TANDEM_HAVE_NCCL "$BUILD/compile_commands.json" 2>/dev/null && [[ -z "${TANDEM_BIN:-}" ]]; then
    printf '| nccl_smoke | FAIL (this build has no NCCL) | 0 s |\n' >> "$WORK/summary.txt"
    FAILED=1
  elif command -v mpirun >/dev/null && grep -q TANDEM_HAVE_MPI "$BUILD/compile_commands.json" 2>/dev/null; then
    note "NCCL smoke test: mpirun -np 1 (MPI shares the NCCL id)"
    step nccl_smoke 180 nccl_check mpirun --allow-run-as-root -np 1
  else
    note "NCCL smoke test: one process without MPI (a one-rank communicator from ncclGetUniqueId)"
    step nccl_smoke 180 nccl_check env
  fi

  # 6. benchmark: gpt2-124m (char tokens are all < 50257), batch BENCH_BATCH x block_size (1024)
  step bench 300 "$BIN" train --config "$BENCH_CONFIG" --data "$WORK/shk" --out "$WORK/bench" --steps "$BENCH_STEPS" \
    --backend cuda --set batch_size="$BENCH_BATCH" --set eval_interval=100000 --set warmup_steps=10
  step profile 180 env TANDEM_PROFILE=1 "$BIN" train --config "$BENCH_CONFIG" --data "$WORK/shk" --out "$WORK/profile" \
    --steps 4 --backend cuda --set batch_size="$BENCH_BATCH" --set eval_interval=100000
fi

# The report.
SMS="$("$BIN" backends 2>/dev/null | grep -A1 '^cuda$' | sed -n 's/.*sm_\([0-9]*\), \([0-9]*\) SMs.*/\1 \2/p' | head -1)"
CLOCK="$(nvidia-smi --query-gpu=clocks.max.sm --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -d ' ')"
python3 - "$LOGS" "$WORK" "$BENCH_BATCH" "${SMS:-0 0}" "${CLOCK:-0}" "$GPU_LINE" > "$WORK/bench.md" <<'PY'
import json, os, re, sys
out, work, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
sm, sms = (int(x) for x in sys.argv[4].split())
clock_mhz, gpu = float(sys.argv[5] or 0), sys.argv[6]
print("## Training benchmark (cuda)\n")
path = os.path.join(work, "bench", "metrics.jsonl")
rows = []
if os.path.exists(path):
    for line in open(path):
        r = json.loads(line)
        if "tokens_per_s" in r and "event" not in r:
            rows.append(r)
if len(rows) < 3:
    print("no benchmark metrics (see bench.log)")
    sys.exit(0)
timed = rows[5:] if len(rows) > 8 else rows[1:]
tok = [r["tokens_per_s"] for r in timed]
hmean = len(tok) / sum(1.0 / t for t in tok)
# The model's shape from the run's last checkpoint (GPT-2 fields), the sequence length from its recipe.
try:
    ckpts = sorted((d for d in os.listdir(os.path.join(work, "bench", "checkpoints")) if d.startswith("step_")),
                   key=lambda d: int(d[5:]))
    ck = os.path.join(work, "bench", "checkpoints", ckpts[-1])
    cfg = json.load(open(os.path.join(ck, "config.json")))
    T = int(json.load(open(os.path.join(ck, "trainer_state.json")))["train_config"]["block_size"])
    L, C, V = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
except (OSError, KeyError, IndexError, ValueError):
    L, C, V, T = 12, 768, 50257, 1024  # no checkpoint to read: the gpt2-124m preset
    print("- (no checkpoint of the benchmark run: FLOPs counted for the gpt2-124m preset)")
flops_tok = 6 * (12 * L * C * C + V * C) + 12 * L * C * T  # bench/README.md's count
# FP32 lanes per SM: 64 on sm_80 (A100), 128 on sm_86/89/90; peak = SMs x lanes x 2 x max clock.
lanes = 64 if sm == 80 else 128
peak = sms * lanes * 2 * clock_mhz * 1e6
print(f"- GPU: {gpu}; sm_{sm}, {sms} SMs, max SM clock {clock_mhz:.0f} MHz")
print(f"- model: {L} layers, {C} wide, vocab {V}")
print(f"- batch {batch} x {T} tokens, {len(rows)} steps, the first {len(rows) - len(timed)} left out of the timing")
print(f"- tokens/s: **{hmean:,.0f}** (harmonic mean over {len(timed)} steps; median {sorted(tok)[len(tok)//2]:,.0f}); "
      f"step {batch * T / hmean * 1000:.0f} ms")
print(f"- counted FLOPs/token: {flops_tok / 1e6:.1f} M (6 x (12 L C^2 + V C) + 12 L C T); achieved {hmean * flops_tok / 1e12:.2f} TFLOP/s")
if peak > 0:
    print(f"- MFU: **{100 * hmean * flops_tok / peak:.1f}%** of the FP32 (non-tensor-core) peak {peak / 1e12:.1f} TFLOP/s "
          "(the backend computes in f32: cuBLAS's default math mode, no TF32)")
losses = [r["loss"] for r in rows]
print(f"- loss: {losses[0]:.3f} -> {losses[-1]:.3f}")
prof = os.path.join(out, "profile.log")
if os.path.exists(prof):
    lines = [l.rstrip() for l in open(prof) if re.match(r"\s+[0-9.]+ s ", l) or l.startswith("op profile")]
    if lines:
        print("\nPer-op profile (TANDEM_PROFILE=1, 4 steps, synchronised after every op; top 15):\n\n```")
        print("\n".join(lines[:16]))
        print("```")
PY

CONFORM_LINE="$(grep -E '^ *f32 ' "$LOGS/conform.log" 2>/dev/null | tail -1)"
{
  echo "# gpu-check report"
  echo
  echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname), $GPU_LINE"
  echo "- driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1), $(nvcc --version | tail -2 | head -1)"
  echo "- total $(elapsed) s; verdict: $([[ $FAILED == 0 ]] && echo '**PASS**' || echo '**FAIL**')"
  sed 's/^/- /' "$WORK/notes.txt" 2>/dev/null
  echo
  echo "| step | status | time |"
  echo "|---|---|---|"
  cat "$WORK/summary.txt"
  echo
  echo "## Devices"
  echo
  echo '```'
  "$BIN" backends 2>&1 | sed -n '/^cuda$/,/^faulty/p' | grep -v '^faulty'
  echo '```'
  echo
  echo "## Conformance"
  echo
  echo '```'
  grep -E '^ +(f32|bf16) +[0-9]+ PASS|failing ops|error' "$LOGS/conform.log" 2>/dev/null
  [[ -n "$CONFORM_LINE" ]] || echo "(no summary; see conform.log)"
  echo '```'
  echo
  echo "Failing rows (first 20):"
  echo
  echo '```'
  grep -E ' FAIL[: ]' "$LOGS/conform.log" 2>/dev/null | head -20
  echo '```'
  echo
  for p in parity_baby_gpt parity_ds_tiny; do
    echo "## ${p/parity_/parity cpu,cuda: }"
    echo
    echo '```'
    tail -6 "$LOGS/$p.log" 2>/dev/null
    echo '```'
    echo
  done
  for d in decode_gpt2 decode_deepseek; do
    echo "## ${d/decode_/greedy decoding cpu vs cuda: }"
    echo
    echo '```'
    tail -8 "$LOGS/$d.log" 2>/dev/null
    echo '```'
    echo
  done
  cat "$WORK/bench.md"
  echo
  echo "## NCCL"
  echo
  echo '```'
  cat "$WORK/nccl-lines.txt" 2>/dev/null
  tail -2 "$LOGS/nccl_smoke.log" 2>/dev/null
  echo '```'
  for f in "$LOGS"/*.log; do  # the end of every log whose step did not pass
    n="$(basename "$f" .log)"
    grep -q "^| $n | PASS" "$WORK/summary.txt" && continue
    [[ "$n" == ldd ]] && continue
    printf '\n## %s: the last 40 lines of its log\n\n```\n' "$n"; tail -40 "$f"; printf '```\n'
  done
  echo
  echo "Every log: logs.tar.gz"
} > "$REPORT"
finish_report
echo "[gpu-check] report: $REPORT ($(elapsed) s)"
exit $FAILED
