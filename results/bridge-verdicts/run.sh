#!/usr/bin/env bash
# The CPU bridge study (results/bridge/run_cpu.sh's recipe: mnist5k at 16 px, tiny ResNet, batch 128, 10 epochs =
# 310 steps, a monitor row every 5 steps) monitored on 3,968 image-disjoint training pairs (31 batches of 128),
# so that the three-outcome PSD test has its power: the one-layer settings of the early warning (b) and Eqn 2 at
# depths 2 and 3 for (c), 3 seeds each. Two runs at a time; run from the repository root.
set -u
COMMON=(--dataset mnist5k --image-size 16 --backbone tiny --batch-size 128 --epochs 10 --warmup-epochs 1
  --projector linear --monitor-every 5 --monitor-images train --monitor-pairs 3968 --spectrum-every 0
  --no-progress --threads 1 --no-tensorboard)
PAPER=(--loss paper --optimizer sgd --momentum 0 --weight-decay 0 --lr 0.2)
COSINE=(--loss info_nce --optimizer lars)
mkdir -p runs/bridge-verdicts
train() {  # NAME FLAGS...
  local name=$1
  shift
  OMP_NUM_THREADS=1 .venv/bin/python -m empirical.train "${COMMON[@]}" "$@" --out "runs/bridge-verdicts/$name" \
    > "runs/bridge-verdicts/$name.log" 2>&1
  echo "$name exit $?"
}
for s in 0 1 2; do
  train "paper-sgd-L1-s$s" "${PAPER[@]}" --seed "$s" &
  train "cos-lars-L1-s$s" "${COSINE[@]}" --seed "$s" &
  wait
done
for s in 0 1 2; do
  train "paper-sgd-L2-s$s" "${PAPER[@]}" --projector-layers 2 --seed "$s" &
  train "paper-sgd-L3-s$s" "${PAPER[@]}" --projector-layers 3 --seed "$s" &
  wait
done
.venv/bin/python -m empirical.bridge runs/bridge-verdicts/*-s? --out results/bridge-verdicts
