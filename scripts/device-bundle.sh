#!/usr/bin/env bash
# Fills .device/ (ignored by git; it travels to the GPU machine beside the working tree) with what
# scripts/gpu-check.sh needs on a machine that has CUDA, CMake, ninja, a C++ compiler and Python
# but none of tandem's Debian development packages and no network: this machine's Debian 12 .debs
# of those libraries, fetched with `apt-get download`. gpu-check.sh unpacks a group only when the
# system lacks that dependency, with `dpkg -x` (or Python where dpkg is missing) into a prefix
# under build-gpu/, never over /. Idempotent: files already here at the candidate version are kept.
#
#   .device/debs/*.deb   the packages
#   .device/groups.tsv   group, kind, packages, files (the table below, with the file names)
#   .device/abi.txt      the newest GLIBC_ and GLIBCXX_ symbol versions the bundled binaries need
#
# Not bundled: OpenMPI (without it the NCCL smoke test runs as one process: a one-rank
# communicator from ncclGetUniqueId), GoogleTest and OpenCL (the GPU check builds neither tests nor
# the OpenCL backend). Usage: scripts/device-bundle.sh [DIR] (default .device). Prints the size.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.device}"

# group  kind  Debian packages
#   dev:  headers, CMake/pkg-config files and the link-time library with its own runtime library;
#         used when the system lacks the dependency; the binary finds the library by its RUNPATH
#   tool: programs, used when missing from PATH (their libraries through LD_LIBRARY_PATH)
#   rt:   a runtime library the dev groups' libraries need, named by its soname; used (through
#         LD_LIBRARY_PATH) only when the system has no library of that soname
BUNDLE=(
  "nlohmann_json dev nlohmann-json3-dev"
  "CLI11 dev libcli11-dev"
  "openblas dev libopenblas-openmp-dev libopenblas0-openmp"
  "xxhash dev libxxhash-dev libxxhash0"
  "pcre2 dev libpcre2-dev libpcre2-8-0"
  "cpp-httplib dev libcpp-httplib-dev libcpp-httplib0.11 libssl-dev zlib1g-dev libbrotli-dev"
  "pkg-config tool pkgconf pkgconf-bin libpkgconf3"
  "libssl.so.3 rt libssl3"
  "libz.so.1 rt zlib1g"
  "libbrotlidec.so.1 rt libbrotli1"
  "libgfortran.so.5 rt libgfortran5"
  "libquadmath.so.0 rt libquadmath0"
)

for tool in apt-get dpkg-deb objdump sha256sum; do
  command -v "$tool" >/dev/null || { echo "device-bundle: $tool is missing (this script runs on Debian 12)" >&2; exit 1; }
done
mkdir -p "$DIR/debs"
DIR="$(cd "$DIR" && pwd)"

# apt's view of every package at once: URL, file name (an epoch's ':' as %3a), size, SHA256.
all_pkgs=()
for line in "${BUNDLE[@]}"; do read -r _ _ pkgs <<< "$line"; all_pkgs+=($pkgs); done
uris() { apt-get download --print-uris -qq "${all_pkgs[@]}" 2>/dev/null; }
listing="$(uris)" || true
if (( $(wc -l <<< "$listing") < ${#all_pkgs[@]} )); then
  echo "[device-bundle] apt-get update (the package lists do not know every package)"
  apt-get update -qq
  listing="$(uris)" || { apt-get download --print-uris "${all_pkgs[@]}" >/dev/null; exit 1; }
fi
fetch=()
for pkg in "${all_pkgs[@]}"; do
  read -r _ f _ sum < <(grep -E "/${pkg//./\\.}_[^/]*\.deb' " <<< "$listing" | head -1)
  [[ -n "${f:-}" ]] || { echo "device-bundle: apt lists no file for $pkg" >&2; exit 1; }
  if [[ ! -s "$DIR/debs/$f" ]] || [[ "$(sha256sum "$DIR/debs/$f" | cut -d' ' -f1)" != "${sum#SHA256:}" ]]; then
    rm -f "$DIR/debs/$f"
    fetch+=("$pkg")
  fi
  eval "file_${pkg//[^A-Za-z0-9]/_}=\$f"
done
if ((${#fetch[@]})); then
  echo "[device-bundle] apt-get download ${fetch[*]}"
  # apt-get download writes into the current directory (as root: _apt may not write there).
  (cd "$DIR/debs" && apt-get download -qq -o APT::Sandbox::User=root "${fetch[@]}")
fi

tsv="$DIR/groups.tsv.new"
: > "$tsv"
for line in "${BUNDLE[@]}"; do
  read -r group kind pkgs <<< "$line"
  files=()
  for pkg in $pkgs; do
    v="file_${pkg//[^A-Za-z0-9]/_}"
    [[ -s "$DIR/debs/${!v}" ]] || { echo "device-bundle: apt-get download $pkg did not write ${!v}" >&2; exit 1; }
    files+=("${!v}")
  done
  printf '%s\t%s\t%s\t%s\n' "$group" "$kind" "$pkgs" "${files[*]}" >> "$tsv"
done
mv "$tsv" "$DIR/groups.tsv"

# Drop the files of older versions (left by an earlier run).
wanted="$(cut -f4 "$DIR/groups.tsv" | tr ' ' '\n')"
for f in "$DIR"/debs/*.deb; do
  grep -qxF "$(basename "$f")" <<< "$wanted" || { echo "[device-bundle] removing stale $(basename "$f")"; rm -f "$f"; }
done

# The newest glibc and libstdc++ symbol versions any bundled binary needs: gpu-check.sh compares
# them with the GPU machine's before it builds anything.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for f in "$DIR"/debs/*.deb; do dpkg-deb -x "$f" "$scratch"; done
needs="$(find "$scratch" -type f \( -name '*.so*' -o -path '*/bin/*' \) -exec objdump -T {} + 2>/dev/null |
  grep -oE '\b(GLIBC|GLIBCXX)_[0-9.]+\b' | sort -u || true)"
newest() { grep "^$1_" <<< "$needs" | sed "s/^$1_//" | sort -V | tail -1; }
printf 'GLIBC %s\nGLIBCXX %s\n' "$(newest GLIBC)" "$(newest GLIBCXX)" > "$DIR/abi.txt"

size="$(du -sb "$DIR" | cut -f1)"
printf '[device-bundle] %s: %d packages in %d groups, %.1f MiB; needs glibc >= %s, libstdc++ GLIBCXX_%s\n' \
  "$DIR" "$(ls "$DIR"/debs/*.deb | wc -l)" "${#BUNDLE[@]}" "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')" \
  "$(newest GLIBC)" "$(newest GLIBCXX)"
