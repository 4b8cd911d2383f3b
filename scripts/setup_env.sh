#!/usr/bin/env bash
# Create or reuse .venv (Python 3.10) from requirements.lock, then install this project in editable mode.
# Re-running with an unchanged lock (and setup.py) finishes in seconds: the hash of both is stamped in the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
LOCK=requirements.lock
STAMP="$VENV/.mtin-lock-hash"
LOG="$VENV/.mtin-setup.log"

die() { printf 'mtin setup: %s\n' "$*" >&2; exit 1; }

[ -f "$LOCK" ] || die "$LOCK is missing. Regenerate it with 'make lock'."
want=$(cat "$LOCK" setup.py | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0  # lock unchanged since the last install
fi

# TFX 1.16 supports Python 3.9-3.10 only; newer TFX wheels need glibc >= 2.38, which Debian 12 lacks.
find_python310() {
  local c
  for c in "${PYTHON310:-}" python3.10 "$HOME"/.pyenv/versions/3.10*/bin/python3.10 /usr/local/bin/python3.10 /usr/bin/python3.10; do
    [ -n "$c" ] || continue
    if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
      command -v "$c" 2>/dev/null || echo "$c"; return 0
    fi
  done
  return 1
}
PY=$(find_python310) || die "Python 3.10 was not found (looked at \$PYTHON310, python3.10, ~/.pyenv/versions/3.10*, /usr/bin). \
mtin-tf runs on TFX 1.16, which supports Python 3.9-3.10 only, and newer TFX wheels need glibc >= 2.38. \
Install Python 3.10 (e.g. 'pyenv install 3.10' or your distribution's python3.10) or point PYTHON310 at it."

# A uv on PATH that does not run (e.g. a pyenv shim for another Python version) is as good as none.
if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then UV=(uv); else
  "$PY" -m uv --version >/dev/null 2>&1 || "$PY" -m pip install -q "uv>=0.4" >/dev/null 2>&1 \
    || die "uv is not installed and 'pip install uv' failed for $PY."
  UV=("$PY" -m uv)
fi

echo "mtin setup: installing $LOCK into $VENV with $PY (first run takes a few minutes)..."
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
  rm -rf "$VENV"
  "${UV[@]}" venv -q --python "$PY" "$VENV" >/dev/null
fi
mkdir -p "$VENV"
if ! "${UV[@]}" pip sync -q --python "$VENV/bin/python" "$LOCK" >"$LOG" 2>&1; then
  grep -iE 'error|because|failed|no solution|not found' "$LOG" | head -5 >&2 || true
  die "installing $LOCK failed (full log: $LOG). If the lock is broken or out of date, regenerate it with 'make lock'."
fi
# lenient mode: an import finder maps mtin_tf, mtin_tf.pipeline, mtin_tf.serving and mtin_tf.schemas to their folders
# (setup.py's package_dir; compat mode would only put the root on sys.path, where pipeline/ is not mtin_tf.pipeline).
# Modules added to those folders later import without a reinstall; a new package_dir entry needs one (setup.py's
# hash below changes, so the next run reinstalls).
if ! "${UV[@]}" pip install -q --python "$VENV/bin/python" --no-deps -C editable_mode=lenient -e . >>"$LOG" 2>&1; then
  tail -5 "$LOG" >&2
  die "installing mtin-tf itself in editable mode failed (full log: $LOG)."
fi
"$VENV/bin/python" -m pip --version >/dev/null 2>&1 || die "pip is missing from $VENV (TFX installs the user module wheel with pip); it should come from $LOCK."
echo "$want" > "$STAMP"
echo "mtin setup: done."
