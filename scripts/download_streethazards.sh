#!/usr/bin/env bash
# Download and extract the real StreetHazards dataset (about 9 GB for train+val, 2 GB for test).
# Usage: bash scripts/download_streethazards.sh [target folder, default data/streethazards]
# Re-running resumes interrupted downloads (wget -c) and skips tars already extracted.
set -euo pipefail
target=${1:-data/streethazards}
base=https://people.eecs.berkeley.edu/~hendrycks
mkdir -p "$target"
for part in train test; do
  tarball="$target/streethazards_$part.tar"
  if [ -d "$target/$part" ] && [ -f "$target/.extracted_$part" ]; then
    echo "$part: already extracted in $target/$part"
    continue
  fi
  wget -c --progress=bar:force -O "$tarball" "$base/streethazards_$part.tar"
  echo "extracting $tarball ..."
  tar -xf "$tarball" -C "$target"
  touch "$target/.extracted_$part"
  rm -f "$tarball"
done
echo "done: $(find "$target/train/images" -name '*.png' | wc -l) train+val and" \
  "$(find "$target/test/images" -name '*.png' | wc -l) test images under $target"
