#!/usr/bin/env bash
# Download, check (MD5) and extract the real StreetHazards dataset (about 9 GB train+val, 2 GB test).
# Usage: bash scripts/download_streethazards.sh [target folder, default data/streethazards]
# A thin wrapper over scripts/download.py: re-running resumes interrupted downloads (HTTP Range)
# and skips tars already extracted. Set PYTHON to choose the interpreter.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/download.py" streethazards --root "${1:-data/streethazards}"
