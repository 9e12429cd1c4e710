#!/usr/bin/env bash
# Create or update tandem's Python reference environment in <repo>/.venv from requirements-dev.txt.
#
#   scripts/python-env.sh            # idempotent; ~1 s when requirements-dev.txt is unchanged
#   scripts/python-env.sh --force    # reinstall even if the stored hash matches
#
# Wheels are kept in a wheelhouse (default ~/.cache/tandem/wheelhouse, override with
# TANDEM_WHEELHOUSE) because pip's own HTTP cache stores nothing behind registry proxies that
# strip caching headers (the case on the project's machines). A fresh clone on the same machine
# therefore installs offline from the wheelhouse; only missing wheels are downloaded.
# Environment: PYTHON (interpreter to build the venv from, default python3), TANDEM_VENV
# (default <repo>/.venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/requirements-dev.txt"
VENV="${TANDEM_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
WHEELHOUSE="${TANDEM_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/wheelhouse}"
STAMP="$VENV/.requirements.sha256"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

say() { printf '[python-env] %s\n' "$*"; }
t0=$SECONDS

[[ -f "$REQ" ]] || { echo "python-env: missing $REQ" >&2; exit 1; }
# The hash covers the requirements, the interpreter version and this script's install logic.
want="$( { cat "$REQ"; "$PY" -c 'import sys; print(sys.version)'; echo v1; } | sha256sum | cut -d' ' -f1)"

if [[ $FORCE -eq 0 && -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  say "up to date ($VENV, requirements hash ${want:0:12})"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating venv $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
rm -f "$STAMP"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
mkdir -p "$WHEELHOUSE"

say "trying offline install from wheelhouse $WHEELHOUSE"
if "${PIP[@]}" install -q --no-index --find-links "$WHEELHOUSE" -r "$REQ" 2>/dev/null; then
  say "installed from wheelhouse"
else
  say "wheelhouse incomplete: downloading missing wheels (first run: several GB, a few minutes)"
  "${PIP[@]}" download --progress-bar off -d "$WHEELHOUSE" -r "$REQ" 2>&1 \
    | while IFS= read -r line; do
        case "$line" in Collecting*|Saved*|Successfully*|*ERROR*|*error*) say "  $line";; esac
      done
  say "installing from wheelhouse"
  "${PIP[@]}" install -q --no-index --find-links "$WHEELHOUSE" -r "$REQ"
fi

say "checking imports"
"$VENV/bin/python" - <<'PYEOF'
import torch, transformers, tokenizers, safetensors, gguf, numpy, pytest, openai
x = torch.randn(8, 8, requires_grad=True)
(x @ x).sum().backward()
assert x.grad is not None
print("[python-env]   torch", torch.__version__, "| transformers", transformers.__version__,
      "| tokenizers", tokenizers.__version__, "| numpy", numpy.__version__)
PYEOF
echo "$want" > "$STAMP"
say "done in $((SECONDS - t0)) s"
