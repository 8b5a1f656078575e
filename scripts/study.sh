#!/usr/bin/env bash
# Set up (or reuse) the environment, then run the main job: the default CT lung-nodule study.
# Extra arguments go to `medlens study` (e.g. --out DIR, --quick, a config path).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
export MEDLENS_DATA="${MEDLENS_DATA:-$ROOT/../shared/data}"
exec medlens study "$@"
