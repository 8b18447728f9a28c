#!/usr/bin/env bash
# Prints the Python interpreter the launchers use: $PYTHON if set; else this repository's .venv,
# unless another virtualenv is active; else python on PATH.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
  echo "$PYTHON"
elif [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$repo/.venv/bin/python" ]; then
  echo "$repo/.venv/bin/python"
else
  echo python
fi
