#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install medlens with its dependencies.
# Sourced by scripts/test.sh and scripts/study.sh; safe to run again (reinstalls only when
# pyproject.toml or constraints.txt changed). Needs only Python >= 3.11 on the machine. Every package is
# installed at the version in constraints.txt, the environment the recorded results were made in.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MEDLENS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.medlens-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    # torch first, pinned to the CPU wheel: left to the resolver, MONAI would pull a CUDA build.
    "$VENV/bin/pip" install --quiet torch==2.13.0
    "$VENV/bin/pip" install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[dev]"
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
