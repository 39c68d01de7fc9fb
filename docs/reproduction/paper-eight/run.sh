#!/bin/bash
# the whole Fashion-MNIST MLP grid (7 regimes + the authors' SCR training) at the paper's budget,
# --jobs 2, timed, from an empty folder; code = /work/grid-src (commit b99bfde)
cd /work/main
date -u +"start %F %T" >> runs/repro-paper-8cell/times.txt
/usr/bin/time -v env PYTHONPATH=/work/grid-src OMP_NUM_THREADS=1 .venv/bin/python -c "import sys; from robustspec.runtime.cli import main; sys.argv=['robustspec']+sys.argv[1:]; sys.exit(main())" \
  reproduce --budget paper --dataset fashion-mnist --jobs 2 --threads 1 \
  --cells fashion-mnist/baseline,fashion-mnist/augment-uniform,fashion-mnist/augment-fgsm,fashion-mnist/adversarial,fashion-mnist/constraint-sr,fashion-mnist/constraint-scr,fashion-mnist/constraint-lr,fashion-mnist/constraint-scr-authors \
  --out runs/repro-paper-8cell --data-dir ../shared/data
echo "rc $?" >> runs/repro-paper-8cell/times.txt
date -u +"end %F %T" >> runs/repro-paper-8cell/times.txt
