#!/usr/bin/env bash
# The noise floor of the observed change: two independent mini-batch streams from the same weights.
# The batch-128 recipe of ../batch/run.sh (seed 0) is stopped at steps 10, 20, 30, 40 and 50 (--stop-at,
# exact resume); a copy of each checkpoint is continued for one monitor interval (5 steps) with the data and
# augmentation stream of seed 1 instead of 0 (the copy's saved "seed" is set to 1 so that --resume accepts
# --seed 1; the weights, optimizer state and held-out pairs are unchanged). Stream A is the uninterrupted
# batch-128 seed-0 run of ../batch/run.sh (an exact resume reproduces it).
set -u
cd "$(dirname "$0")/../../.."
COMMON=(--dataset mnist5k --image-size 16 --backbone tiny --epochs 60 --max-steps 60 --warmup-epochs 0
  --projector linear --monitor-every 5 --monitor-pairs 4096 --spectrum-every 0 --no-progress --threads 1
  --no-tensorboard --loss paper --optimizer sgd --momentum 0 --weight-decay 0 --lr 0.2 --batch-size 128)
B=runs/bridge-fork/base
rm -rf runs/bridge-fork && mkdir -p runs/bridge-fork
for t in 10 20 30 40 50; do
  flag=(); [ "$t" -gt 10 ] && flag=(--resume)
  OMP_NUM_THREADS=1 .venv/bin/python -m empirical.train "${COMMON[@]}" --seed 0 --out "$B" --stop-at "$t" \
    "${flag[@]}" >> runs/bridge-fork/base.log 2>&1 || exit 1
  F="runs/bridge-fork/fork$t"
  cp -r "$B" "$F"
  OMP_NUM_THREADS=1 .venv/bin/python - "$F" "$t" <<'PY'
import glob, sys, torch
folder, t = sys.argv[1], int(sys.argv[2])
for path in glob.glob(f"{folder}/ckpt-*.pt"):
    if int(path[-12:-3]) != t:
        __import__("os").remove(path)
        continue
    ck = torch.load(path, map_location="cpu", weights_only=False)
    ck["config"]["seed"] = 1
    torch.save(ck, path)
PY
  OMP_NUM_THREADS=1 .venv/bin/python -m empirical.train "${COMMON[@]}" --seed 1 --out "$F" --stop-at $((t + 5)) \
    --resume > "$F.log" 2>&1 || exit 1
  echo "fork at $t done"
done
