#!/bin/bash
# the ninth session's quiet-machine benchmarks, one after another, one thread each (outputs in
# runs/bench-s9, copied to bench/results/*_s9*); /tmp/oldroot/robustspec is a worktree of 4bbbd17:
#   git worktree add /tmp/oldroot/robustspec 4bbbd17
cd /work/main
export OMP_NUM_THREADS=1
date -u; uptime
.venv/bin/python bench/bench_training_speed.py --only step,micro --json bench/results/training_speed_s9_step.json > runs/bench-s9/step.txt 2>&1
date -u; uptime
.venv/bin/python bench/search_phases.py --reps 200 > bench/results/search_phases_s9.txt 2>&1
date -u; uptime
.venv/bin/python bench/attack_equal_strength.py --json bench/results/attack_equal_strength_s9.json > runs/bench-s9/attack.txt 2>&1
date -u; uptime
for i in 1 2; do for R in /tmp/oldroot /work; do echo "== $R"; (cd /tmp && PYTHONPATH=$R /work/main/.venv/bin/python /work/main/bench/lr_vs_sr_step.py --reps 100 | tail -1); done; done > runs/bench-s9/ab_old_new.txt 2>&1
date -u; uptime
