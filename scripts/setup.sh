#!/usr/bin/env bash
# Installs tandem's build dependencies (Debian packages, only those missing) and builds it:
#   build/tandem, build/tandem_tests
# Idempotent: on a machine that has everything it only runs an incremental build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PACKAGES=(build-essential cmake pkg-config python3 python3-venv
          nlohmann-json3-dev libcli11-dev libopenblas-openmp-dev libxxhash-dev libpcre2-dev libgtest-dev
          ocl-icd-opencl-dev opencl-headers pocl-opencl-icd libclblast-dev
          libopenmpi-dev openmpi-bin  # data-parallel training across processes
          libcpp-httplib-dev chromium)  # serve's HTTP library; the browser its chat-page test drives
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

echo "[setup] building (Release)"
cmake -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo "[setup] built build/tandem"
