#!/usr/bin/env bash
# The augment-strength study, 3 seeds, with the three-outcome a-priori X verdict (run from the repository root).
set -euo pipefail
for seed in 0 1 2; do
  python -m empirical.experiments augment-strength --dataset mnist5k --scale cpu --no-progress \
    --train-args "--seed $seed --threads 2" \
    --out results/augment-strength-mnist5k-cpu-verdicts/seed$seed --runs-dir runs/experiments/augment-seed$seed
done
