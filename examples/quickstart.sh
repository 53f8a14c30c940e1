#!/usr/bin/env bash
# The main job on an embedded default: install → generate EMT data → train a Deep Potential →
# export → error report and parity plot on independent test data → 2000 fs of NVE MD with the ASE
# calculator, and a plot of its log.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MLIP_VENV:-.venv}
bash scripts/install.sh "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
start=$(date +%s)
OUT=runs/quickstart
mlip train training/quickstart_cu.yaml --overwrite -o "$OUT"
python examples/quickstart_data.py "$OUT"
echo "== accuracy on independent EMT test data =="
mlip info "$OUT/model.pt"
mlip test "$OUT/model.pt" "$OUT/test.xyz" --plot "$OUT/parity_test.png"
echo "== NVE MD, 108 atoms, dt = 1 fs, 2000 steps, 300 K =="
mlip md "$OUT/model.pt" "$OUT/cu_108.xyz" --steps 2000 --dt 1.0 --temperature 300 \
    --trajectory "$OUT/md.extxyz" --log "$OUT/md.log" --every 50 --plot "$OUT/md.png"
echo "quick start finished in $(( $(date +%s) - start )) s (after install); outputs in $OUT/"
echo "parity plot (test data): $OUT/parity_test.png   MD plot: $OUT/md.png"
