#!/bin/bash
# E4's baseline CNN at the paper's budget into the same folder (tenth session, 5 December 2026);
# code = a clone of the commit on PYTHONPATH (a17c8b8 for the training, a13ff68 and 4219200
# after: the same searches bit for bit). It ran in parts (killed to free the machine for
# benchmarks and restarted; each part resumed what the last had saved):
#   13:22-13:41 UTC the training (100 epochs, 1137 s; an SR evaluation begun after it was lost
#   to the kill at 13:48), 14:01-14:30 the SR attack's evaluation (one job), 14:33-15:31 the
#   rest with --jobs 2 (the SR verification and the other three attacks, two at a time).
cd /work/main
PYTHONPATH=/work/grid-src OMP_NUM_THREADS=1 .venv/bin/python -m robustspec.runtime.cli \
  reproduce --budget paper --dataset fashion-mnist --jobs 2 --threads 1 \
  --cells fashion-mnist/cnn-baseline --out runs/repro-paper-units --data-dir ../shared/data
