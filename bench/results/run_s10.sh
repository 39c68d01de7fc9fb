#!/bin/bash
# the tenth session's quiet-machine benchmarks, one after another, one thread each (outputs in
# runs/bench-s10, copied to bench/results/*_s10*); /tmp/oldroot/robustspec is a worktree of
# f177e50 (the session's first commit):  git worktree add /tmp/oldroot/robustspec f177e50
cd /work/main
export OMP_NUM_THREADS=1
date -u; uptime
.venv/bin/python bench/bench_training_speed.py --only step,quantifier,micro --json bench/results/training_speed_s10_step.json > runs/bench-s10/step.txt 2>&1
date -u; uptime
for i in 1 2; do for R in /tmp/oldroot /work; do echo "== $R"; (cd /tmp && PYTHONPATH=$R /work/main/.venv/bin/python /work/main/bench/lr_vs_sr_step.py --reps 100 | tail -1); done; done > bench/results/lr_vs_sr_step_s10_commits.txt 2>&1
date -u; uptime
.venv/bin/python bench/search_phases.py --reps 200 > bench/results/search_phases_s10.txt 2>&1
date -u; uptime
.venv/bin/python bench/ops_per_step.py > bench/results/ops_per_step_s10.txt 2>&1
date -u; uptime
.venv/bin/python bench/attack_equal_strength.py --json bench/results/attack_equal_strength_s10.json > runs/bench-s10/attack.txt 2>&1
date -u; uptime
