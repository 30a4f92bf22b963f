#!/usr/bin/env bash
# The main job on the embedded synthetic dataset: set up, generate data, train, evaluate.
# Extra arguments go to scripts/main.py (see: python scripts/main.py --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" scripts/main.py --preset demo "$@"
