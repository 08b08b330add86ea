#!/usr/bin/env bash
# Shared by run.sh and test.sh: make the project's virtualenv and install a
# requirements file into it, only when that file changed since the last install.
# Usage: source bin/bootstrap.sh <requirements file>
set -euo pipefail
EASEL_VENV=${EASEL_VENV:-.venv}
EASEL_PYTHON=${EASEL_PYTHON:-python3}

if ! "$EASEL_PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  # Debian ships venv/ensurepip separately from python3.
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "Python's venv module is missing: install python3-venv (Debian/Ubuntu) and run again." >&2
    exit 1
  fi
fi
if [ ! -x "$EASEL_VENV/bin/python" ]; then
  echo "Creating the virtualenv in $EASEL_VENV ..."
  "$EASEL_PYTHON" -m venv "$EASEL_VENV"
fi
_req="$1"
_stamp="$EASEL_VENV/.installed-$(basename "$_req")"
_sum=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$_stamp" 2>/dev/null || true)" != "$_sum" ]; then
  echo "Installing $_req ..."
  "$EASEL_VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$EASEL_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$_req"
  echo "$_sum" > "$_stamp"
fi
PY="$EASEL_VENV/bin/python"
