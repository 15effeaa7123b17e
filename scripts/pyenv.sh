#!/usr/bin/env bash
# Create (idempotently) the Python virtualenv used by the kavari interop tests and
# install Python kavari 0.2.2.1 with its dependencies pinned by
# test/interop/py/requirements.txt. Prints the venv's python path on stdout (only that);
# progress goes to stderr.
#
#   PY=$(scripts/pyenv.sh) && "$PY" test/interop/py/publish.py --help
#
# Environment:
#   PYTHON               interpreter used to create the venv (default: python3.11, else python3; needs >= 3.10)
#   KAVARI_PYVENV        venv location (default: <repo>/.cache/pyvenv); not PYENV_DIR, which the
#                        pyenv shims interpret
#   KAVARI_PYVENV_FORCE  set to 1 to recreate the venv from scratch
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${KAVARI_PYVENV:-$repo/.cache/pyvenv}
req=$repo/test/interop/py/requirements.txt
stamp=$venv/.kavari-requirements.sha256

log() { echo "pyenv.sh: $*" >&2; }

if [[ -n "${PYTHON:-}" ]]; then
  base=$PYTHON
elif command -v python3.11 >/dev/null 2>&1; then
  base=python3.11
else
  base=python3
fi

# kavari 0.2.2.1 declares python>=3.9 but evaluates `X | None` annotations at import
# time (kavari/kafka_message.py:13), so it really needs >= 3.10.
check_version() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null
}

want=$(sha256sum "$req" | cut -d' ' -f1)
py=$venv/bin/python

if [[ "${KAVARI_PYVENV_FORCE:-0}" == 1 ]]; then
  log "KAVARI_PYVENV_FORCE=1: removing $venv"
  rm -rf "$venv"
fi

# One creation at a time: the test command runs two broker passes side by
# side, and each may ask for the venv.
mkdir -p "$(dirname "$venv")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv.lock"
  flock 9
fi

# Reuse the venv when it works and was populated from the current requirements.txt.
if [[ -x "$py" ]] && check_version "$py" && [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]] \
   && "$py" -c 'import kavari, confluent_kafka, dacite' >/dev/null 2>&1; then
  echo "$py"
  exit 0
fi

if [[ ! -x "$py" ]] || ! "$py" -c 'import sys' >/dev/null 2>&1; then
  command -v "$base" >/dev/null 2>&1 || { log "interpreter '$base' not found (set PYTHON=...)"; exit 1; }
  check_version "$base" || { log "$base is older than 3.10; kavari 0.2.2.1 cannot be imported there"; exit 1; }
  log "creating venv $venv with $base"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! "$base" -m venv "$venv" >&2; then
    log "'$base -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
    exit 1
  fi
fi

log "installing pinned requirements from ${req#$repo/}"
"$py" -m pip install --disable-pip-version-check --no-input -q -r "$req" >&2
"$py" -c 'import importlib.metadata as m, sys; v = m.version("kavari"); sys.exit(0 if v == "0.2.2.1" else "kavari %s installed, want 0.2.2.1" % v)'
echo "$want" > "$stamp"
echo "$py"
