#!/bin/bash
# the whole Fashion-MNIST MLP grid at the paper's budget, --jobs 2 with the unit scheduler,
# timed, from an empty folder; code = commit 36f3e9a (a clone on PYTHONPATH, so edits beside it did not change the run)
cd /work/main
date -u +"start %F %T" >> runs/repro-paper-units/times.txt
/usr/bin/time -v env PYTHONPATH=/work/grid-src OMP_NUM_THREADS=1 .venv/bin/python -c "import sys; from robustspec.runtime.cli import main; sys.argv=['robustspec']+sys.argv[1:]; sys.exit(main())" \
  reproduce --budget paper --dataset fashion-mnist --jobs 2 --threads 1 \
  --cells fashion-mnist/baseline,fashion-mnist/augment-uniform,fashion-mnist/augment-fgsm,fashion-mnist/adversarial,fashion-mnist/constraint-sr,fashion-mnist/constraint-scr,fashion-mnist/constraint-lr,fashion-mnist/constraint-scr-authors \
  --out runs/repro-paper-units --data-dir ../shared/data
echo "rc $?" >> runs/repro-paper-units/times.txt
date -u +"end %F %T" >> runs/repro-paper-units/times.txt
