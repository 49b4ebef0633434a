#!/usr/bin/env bash
# Depth (c) of the bridge study with the powered X test: Eqn 2, plain SGD, 2 and 3 linear projector layers,
# 3 seeds, the recipe of run.sh (31 image-disjoint training batches per monitor row). Run from the repository
# root after run.sh; the analysis reads the one-layer runs too.
set -u
COMMON=(--dataset mnist5k --image-size 16 --backbone tiny --batch-size 128 --epochs 10 --warmup-epochs 1
  --projector linear --monitor-every 5 --monitor-images train --monitor-pairs 3968 --spectrum-every 0
  --no-progress --threads 1 --no-tensorboard)
PAPER=(--loss paper --optimizer sgd --momentum 0 --weight-decay 0 --lr 0.2)
mkdir -p runs/bridge-verdicts
train() {  # NAME FLAGS...
  local name=$1
  shift
  OMP_NUM_THREADS=1 .venv/bin/python -m empirical.train "${COMMON[@]}" "$@" --out "runs/bridge-verdicts/$name" \
    > "runs/bridge-verdicts/$name.log" 2>&1
  echo "$name exit $?"
}
for s in 0 1 2; do
  train "paper-sgd-L2-s$s" "${PAPER[@]}" --projector-layers 2 --seed "$s" &
  train "paper-sgd-L3-s$s" "${PAPER[@]}" --projector-layers 3 --seed "$s" &
  wait
done
.venv/bin/python -m empirical.bridge runs/bridge-verdicts/*-s? --out results/bridge-verdicts
