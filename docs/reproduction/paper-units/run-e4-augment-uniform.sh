#!/bin/bash
# E4's random-uniform augmentation CNN at the paper's budget, into a work folder seeded from this
# one (eleventh session, 5 December 2026; trained by a clone of c91800b on PYTHONPATH). A checkout
# starts without runs/, so the work folder is this folder's cells/, settings.json and runs.json;
# the trained network (cells/fashion-mnist/cnn-augment-uniform/train/, committed; .gitignore
# lets this last.pt through) makes the training a no-op, and each attack's saved evaluation
# (eval-<attack>.json) is skipped, so the same command resumes the rest. When the cell has its
# result.json, copy it (and nothing else) back here and regenerate the report:
#   cp runs/repro-paper-units/cells/fashion-mnist/cnn-augment-uniform/result.json \
#      docs/reproduction/paper-units/cells/fashion-mnist/cnn-augment-uniform/
#   robustspec reproduce --report-only --out docs/reproduction/paper-units
cd "$(dirname "$0")/../../.."
mkdir -p runs/repro-paper-units
cp -rn docs/reproduction/paper-units/cells docs/reproduction/paper-units/settings.json \
  docs/reproduction/paper-units/runs.json runs/repro-paper-units/
OMP_NUM_THREADS=1 .venv/bin/robustspec reproduce --budget paper --dataset fashion-mnist --jobs 2 \
  --threads 1 --cells fashion-mnist/cnn-augment-uniform --out runs/repro-paper-units \
  --data-dir "${DATA:-../shared/data}"
