#!/usr/bin/env bash
# GPU check of the empirical package (issue 4), < 8 minutes on one H100/H200. From the repository root:
#   bash bench/gpu_check.sh [OUTDIR]          (OUTDIR defaults to $OUT, else /tmp/gpu_check)
# 1. bench/train_throughput.py: ResNet-18, CIFAR stem, 32 px, global batch 512, bf16, channels-last,
#    without and with torch.compile, on synthetic uint8 data. Goal: full step >= 20,000 views/s and
#    >= 90% of the model-only rate.
# 2. A short mnist5k run, SimCLR (mlp projector) vs DirectCLR, with the spectrum logged.
# Needs only torch + torchvision (no kornia, no network). mnist5k reads the cache file mnist5k-v1.npz
# from $DIMCOLLAPSE_CACHE (default: .gpu_cache/ in the repository); see bench/README.md for carrying it.
set -uo pipefail
OUTDIR=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
export DIMCOLLAPSE_CACHE=${DIMCOLLAPSE_CACHE:-$PWD/.gpu_cache}
PY=${PYTHON:-python3}
# GPU_CHECK_SMOKE=1: a CPU dry run of this script with tiny sizes (checks the plumbing, not the speed).
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
  NET=tiny; BATCH=32; STEPS=2; WARM=1; TRAIN_STEPS=4; DEV="--device cpu"
else
  NET=resnet18; BATCH=512; STEPS=25; WARM=8; TRAIN_STEPS=240; DEV=""
fi
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')" | tee "$OUTDIR/env.txt"

for mode in eager compile; do
  flag=""; [ "$mode" = compile ] && flag="--compile"
  timeout 200 $PY bench/train_throughput.py --backbone $NET --batch-size $BATCH --image-size 32 $DEV \
    --precision bf16 --channels-last $flag --steps $STEPS --warmup $WARM --json "$OUTDIR/throughput_$mode.json" \
    2>&1 | tee -a "$OUTDIR/throughput.txt" || echo "throughput $mode failed or timed out" | tee -a "$OUTDIR/throughput.txt"
done

for proj in mlp directclr; do
  timeout 75 $PY -m empirical.train --dataset mnist5k --backbone $NET --projector "$proj" $DEV \
    --batch-size $BATCH --epochs 40 --max-steps $TRAIN_STEPS --warmup-epochs 2 --lr 4.8 --spectrum-every 80 \
    --log-every 20 --channels-last --no-progress --out "$OUTDIR/mnist5k-$proj" 2>&1 | tail -3 \
    || echo "mnist5k $proj failed"
done

$PY - "$OUTDIR" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
for mode in ("eager", "compile"):
    p = os.path.join(out, f"throughput_{mode}.json")
    if os.path.exists(p):
        r = json.load(open(p))
        print(f"{mode:8s} full {r['full_views_per_s']:9.0f} views/s  model {r['model_views_per_s']:9.0f} views/s  "
              f"full/model {r['full_over_model']:.3f}  peak {r['peak_mem_mb']:.0f} MiB")
for proj in ("mlp", "directclr"):
    p = os.path.join(out, f"mnist5k-{proj}", "metrics.jsonl")
    if os.path.exists(p):
        rows = [json.loads(line) for line in open(p)]
        last = [r for r in rows if "erank_z" in r][-1:] or rows[-1:]
        for r in last:
            keys = ("step", "loss", "probe_acc_heldout", "erank_z", "collapsed_z", "erank_r", "collapsed_r", "img_per_s")
            print(proj, {k: (round(r[k], 3) if isinstance(r.get(k), float) else r.get(k)) for k in keys})
PYEOF
