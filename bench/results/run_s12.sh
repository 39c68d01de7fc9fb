#!/bin/bash
# the twelfth session's benchmarks (code at 5c82160; outputs in bench/results/*_s12*), one thread
# each; the two background reproduction processes (E4's cells) were stopped (kill -STOP) for the
# timed ones: compiled_vs_handwritten, quantifier and eval_forward_rows
cd /work/main
export OMP_NUM_THREADS=1
.venv/bin/python bench/bench_compiled_vs_handwritten.py --reps 200 --markdown > bench/results/compiled_vs_handwritten_s12.txt 2>&1
.venv/bin/python bench/bench_training_speed.py --only quantifier > bench/results/quantifier_s12.txt 2>&1
.venv/bin/python bench/eval_forward_rows.py --n 1000 --rows 125,250,500 --rounds 2 > bench/results/eval_forward_rows_s12.txt
# counts, not times (the background jobs ran):
.venv/bin/python bench/per_class_search_strength.py --steps 10,20,50 > bench/results/per_class_search_strength_s12.txt
