#!/usr/bin/env bash
# Install the Python packages of requirements.txt into the current Python (skipped when done).
# Usage: bash scripts/setup.sh   (PYTHON=/path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
stamp=.setup-stamp
want="$(sha256sum requirements.txt | cut -d' ' -f1) $("$PY" -c 'import sys; print(sys.executable)')"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$PY" -c "import torch, torchvision, torchmetrics, cv2, tqdm" 2>/dev/null; then
  exit 0
fi
echo "Installing requirements into $("$PY" -c 'import sys; print(sys.executable)') (first run: a few minutes)..."
log=$(mktemp)
if ! "$PY" -m pip install -q --disable-pip-version-check -r requirements.txt >"$log" 2>&1; then
  grep -v "^WARNING: Location" "$log" >&2 || true
  echo "pip install -r requirements.txt failed (output above)." >&2
  exit 1
fi
rm -f "$log"
echo "$want" >"$stamp"
