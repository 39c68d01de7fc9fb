#!/bin/bash
# the eleventh session's quiet-machine benchmarks, one after another, one thread each (outputs in
# runs/bench-s11, copied to bench/results/*_s11*); /tmp/oldroot/robustspec is a worktree of
# c91800b (the session's first commit, before score_rest):  git worktree add /tmp/oldroot/robustspec c91800b
cd /work/main
export OMP_NUM_THREADS=1
date -u; uptime
.venv/bin/python bench/bench_training_speed.py --only step,quantifier,micro --json bench/results/training_speed_s11_step.json > runs/bench-s11/step.txt 2>&1
date -u; uptime
for i in 1 2; do .venv/bin/python bench/lr_vs_sr_step.py --reps 100 | tail -1; done > bench/results/lr_vs_sr_step_s11.txt 2>&1
date -u; uptime
.venv/bin/python bench/search_phases.py --reps 200 > bench/results/search_phases_s11.txt 2>&1
date -u; uptime
.venv/bin/python bench/ops_per_step.py > bench/results/ops_per_step_s11.txt 2>&1
date -u; uptime
for R in /tmp/oldroot /work; do echo "== $R"; (cd /tmp && PYTHONPATH=$R /work/main/.venv/bin/python /work/main/bench/attack_equal_strength.py --json /work/main/runs/bench-s11/attack_$(basename $R).json > /work/main/runs/bench-s11/attack_$(basename $R).txt 2>&1); done
date -u; uptime
