#!/usr/bin/env bash
# Is the one-layer Eqn-2 prediction limited by mini-batch gradient noise? The CPU study's paper/SGD recipe
# (mnist5k 16 px, tiny ResNet, linear projector, plain SGD lr 0.2, no momentum or weight decay), shortened to
# 60 steps (no warm-up: cosine from lr 0.2), a row every 5 steps on 4,096 fixed held-out pairs, at batch 128
# (the study's) and 1,024 (8x less gradient noise per step), seed 0. Only the batch differs; the held-out pairs
# are the same. Then the per-interval scores (analyse.py).
set -u
cd "$(dirname "$0")/../../.."
COMMON=(--dataset mnist5k --image-size 16 --backbone tiny --epochs 60 --max-steps 60 --warmup-epochs 0
  --projector linear --monitor-every 5 --monitor-pairs 4096 --spectrum-every 0 --no-progress --threads 1
  --no-tensorboard --loss paper --optimizer sgd --momentum 0 --weight-decay 0 --lr 0.2)
mkdir -p runs/bridge-batch

train() {  # BATCH SEED
  local name="paper-sgd-L1-b$1-s$2"
  OMP_NUM_THREADS=1 .venv/bin/python -m empirical.train "${COMMON[@]}" --batch-size "$1" --seed "$2" \
    --out "runs/bridge-batch/$name" > "runs/bridge-batch/$name.log" 2>&1
  echo "$name exit $?"
}

train 128 0 &
train 1024 0 &
wait
for run in runs/bridge-batch/paper-sgd-L1-b*-s?; do
  .venv/bin/python -m empirical.bridge "$run" --no-figures --no-progress --out "results/bridge/batch/$(basename "$run")"
done
OMP_NUM_THREADS=1 .venv/bin/python results/bridge/batch/analyse.py runs/bridge-batch/paper-sgd-L1-b*-s? \
  > results/bridge/batch/scores.json
