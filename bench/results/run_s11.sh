#!/bin/bash
# the eleventh session's quiet-machine benchmarks, one after another, one thread each (outputs in
# runs/bench-s11, copied to bench/results/*_s11*); /tmp/oldroot/robustspec is a worktree of
# c91800b (the session's first commit, before score_rest); code at 1d251a4:  git worktree add /tmp/oldroot/robustspec c91800b
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
# then, the throughput at torchattacks' 2-8-step strengths with more repetitions (the run above
# has 5, whose quartiles were 10-35% apart), old and new alternating processes:
for R in /tmp/oldroot /work; do (cd /tmp && PYTHONPATH=$R /work/main/.venv/bin/python /work/main/bench/attack_equal_strength.py --throughput-steps 2,3,4,5,6,7,8 --throughput-reps 25 --json /work/main/runs/bench-s11/attack_tp_$(basename $R).json > /work/main/runs/bench-s11/attack_tp_$(basename $R).txt 2>&1); done
date -u; uptime
# copied: attack_{oldroot,work}.json -> bench/results/attack_equal_strength_s11{_c91800b,}.json,
# attack_tp_{oldroot,work}.json -> bench/results/attack_equal_strength_s11_tp{_c91800b,}.json,
# step.txt -> bench/results/training_speed_s11_step.txt
