#!/usr/bin/env bash
# Set up (or reuse) the environment, then run the whole test suite on the real data in MEDLENS_DATA.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
bash "$ROOT/scripts/system.sh"
cd "$ROOT"
export MEDLENS_DATA="${MEDLENS_DATA:-$ROOT/../shared/data}"
exec python -m pytest "$@"
