#!/bin/bash
# E4's FGSM-augmentation CNN at the paper's budget, resumed into a work folder seeded from this
# one (twelfth session, 5 December 2026: trained from 18:48 UTC by a clone of 3fa4032 on
# PYTHONPATH, in a folder of its own, runs/repro-fgsm, beside the cnn-augment-uniform run). A
# checkout starts without runs/, so the work folder is this folder's cells/, settings.json and
# runs.json; the committed checkpoint (cells/fashion-mnist/cnn-augment-fgsm/train/last.pt and
# history.json, the epochs done when the session ended) resumes the training from its last
# epoch, then the attacks' evaluations and verifications run. When the cell has its
# result.json, copy it and its eval-*/verify-* files back here and regenerate the report:
#   cp runs/repro-paper-units/cells/fashion-mnist/cnn-augment-fgsm/{result.json,eval-*,verify-*} \
#      docs/reproduction/paper-units/cells/fashion-mnist/cnn-augment-fgsm/
#   robustspec reproduce --report-only --out docs/reproduction/paper-units
cd "$(dirname "$0")/../../.."
mkdir -p runs/repro-paper-units
cp -rn docs/reproduction/paper-units/cells docs/reproduction/paper-units/settings.json \
  docs/reproduction/paper-units/runs.json runs/repro-paper-units/
OMP_NUM_THREADS=1 .venv/bin/robustspec reproduce --budget paper --dataset fashion-mnist --jobs 2 \
  --threads 1 --cells fashion-mnist/cnn-augment-fgsm --out runs/repro-paper-units \
  --data-dir "${DATA:-../shared/data}"
