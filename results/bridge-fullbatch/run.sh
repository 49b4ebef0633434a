#!/usr/bin/env bash
# Full-batch gradient descent on real features: the bridge's tiny ResNet on mnist5k at 16 px, but every step is
# one batch of all 4,000 training images with one fixed pair of views each (--full-batch), and a monitor row
# after every step on exactly those pairs, so the monitor's X is the step's own and Lemma 2 has no sampling
# noise left to hide behind. Eqn 2 (paper loss), no weight decay, cosine schedule without warm-up:
# momentum 0 at lr 0.1, and momentum 0.9 at lr 0.01 (the same steady-state step lr / (1 - m)). 100 steps,
# seeds 0-2 (override with STEPS=..., SEEDS="..."). Two runs at a time; run from the repository root.
set -u
SEEDS=${SEEDS:-0 1 2}
STEPS=${STEPS:-100}
COMMON=(--dataset mnist5k --image-size 16 --backbone tiny --full-batch --batch-size 4000 --epochs "$STEPS"
  --warmup-epochs 0 --projector linear --loss paper --optimizer sgd --weight-decay 0 --monitor-every 1
  --spectrum-every 0 --log-every 10 --no-progress --threads 1 --no-tensorboard --device cpu)
mkdir -p runs/bridge-fullbatch
train() {  # NAME FLAGS...
  local name=$1
  shift
  OMP_NUM_THREADS=1 .venv/bin/python -m empirical.train "${COMMON[@]}" "$@" --out "runs/bridge-fullbatch/$name" \
    > "runs/bridge-fullbatch/$name.log" 2>&1
  echo "$name exit $?"
}
for s in $SEEDS; do
  train "paper-gd-m0-s$s" --momentum 0 --lr 0.1 --seed "$s" &
  train "paper-gd-m09-s$s" --momentum 0.9 --lr 0.01 --seed "$s" &
  wait
done
.venv/bin/python -m empirical.bridge runs/bridge-fullbatch/*-s? --out results/bridge-fullbatch
OMP_NUM_THREADS=1 .venv/bin/python results/bridge-verdicts/theorem1_share.py "runs/bridge-fullbatch/*-s?" results/bridge-fullbatch/theorem1_share.json
OMP_NUM_THREADS=1 .venv/bin/python results/bridge-fullbatch/update_check.py "runs/bridge-fullbatch/*-s?" results/bridge-fullbatch/update_check.json
