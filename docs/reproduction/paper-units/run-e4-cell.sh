#!/bin/bash
# Resume one of E4's CNN cells at the paper's budget from this folder:
#   bash docs/reproduction/paper-units/run-e4-cell.sh augment-fgsm     (or augment-uniform, ...)
# A session's checkout starts without runs/, so the work folder (runs/repro-paper-units) is
# seeded from this folder's cells/, settings.json and runs.json (cp -n: a work folder's own
# files stay). A committed checkpoint (cells/fashion-mnist/cnn-<regime>/train/last.pt and
# history.json; .gitignore lets a cell's train/last.pt through) resumes the training from its
# last epoch, or makes it a no-op when it is done; each attack's saved evaluation
# (eval-<attack>.json) and verification (verify-<attack>.json) is skipped. Used for
# cnn-augment-uniform (eleventh and twelfth sessions) and cnn-augment-fgsm (trained in part in
# the twelfth). When the cell has its result.json, copy it back with its eval-*/verify-* files,
# the work folder's runs.json too, and regenerate the report:
#   cp runs/repro-paper-units/cells/fashion-mnist/cnn-REGIME/{result.json,eval-*,verify-*.json,verify-*.csv} \
#      docs/reproduction/paper-units/cells/fashion-mnist/cnn-REGIME/
#   cp runs/repro-paper-units/runs.json docs/reproduction/paper-units/
#   robustspec reproduce --report-only --out docs/reproduction/paper-units
set -euo pipefail
regime=${1:?which E4 cell: augment-uniform, augment-fgsm, constraint-sr or baseline}
cd "$(dirname "$0")/../../.."
mkdir -p runs/repro-paper-units
cp -rn docs/reproduction/paper-units/cells docs/reproduction/paper-units/settings.json \
  docs/reproduction/paper-units/runs.json runs/repro-paper-units/
OMP_NUM_THREADS=1 .venv/bin/robustspec reproduce --budget paper --dataset fashion-mnist --jobs 2 \
  --threads 1 --cells "fashion-mnist/cnn-$regime" --out runs/repro-paper-units \
  --data-dir "${DATA:-../shared/data}"
