#!/usr/bin/env bash
# GPU check of the empirical package, < 8 minutes on one H100/H200. From the repository root:
#   bash bench/gpu_check.sh [OUTDIR]          (OUTDIR defaults to $OUT, else /tmp/gpu_check)
# 1. bench/train_throughput.py (it times empirical.train's own step: both views in one call, LARS, with the whole
#    step compiled as a unit in the compile modes): ResNet-18, CIFAR stem, 32 px, global batch 512, bf16,
#    channels-last, synthetic uint8 data, in three modes: eager, torch.compile (default), torch.compile
#    (reduce-overhead, CUDA graphs); MODES="... max-autotune" adds that mode (its own 130 s timeout).
#    Each run times, interleaved: the full step with and without the parameter prefetcher, the model alone
#    (eager: also with the views the other way, two calls; one_call_over_two_calls),
#    the augmentation alone, and the LARS step vectorized vs the per-parameter loop; it reports MFU.
#    Goals: full step >= 60,000 views/s, full/model >= 0.95, LARS >= 5x faster than the loop.
# 2. bench/jpeg_decode.py: both imagefolder input paths (--decode workers / device: nvJPEG) and decode_jpeg alone.
# 3. A short mnist5k run, SimCLR (mlp projector) vs DirectCLR, with the spectrum logged; its median logged rate
#    is compared with the eager bench's full-step rate (the mlp run has the bench's settings; goal >= 0.9).
# Needs only torch + torchvision (no network). mnist5k reads the cache file mnist5k-v1.npz from
# $DIMCOLLAPSE_CACHE (default: .gpu_cache/ in the repository); see bench/README.md for carrying it.
set -uo pipefail
OUTDIR=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
export DIMCOLLAPSE_CACHE=${DIMCOLLAPSE_CACHE:-$PWD/.gpu_cache}
PY=${PYTHON:-python3}
T0=$(date +%s)
# GPU_CHECK_SMOKE=1: a CPU dry run of this script with tiny sizes (checks the plumbing, not the speed).
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
  NET=tiny; BATCH=32; STEPS=2; WARM=1; OPT=3; TRAIN_STEPS=4; LOG=1; DEV="--device cpu"; MODES=${MODES:-eager}
  T_EAGER=120; T_COMPILE=300; T_TRAIN=120; T_JPEG=60; JPEG_WORKERS=1; JPEG_IMAGES=64
else
  NET=resnet18; BATCH=512; STEPS=20; WARM=6; OPT=50; TRAIN_STEPS=240; LOG=20; DEV=""
  MODES=${MODES:-"eager default reduce-overhead"}
  # at most 70 + 2 x 130 + 30 + 2 x 50 = 460 s with the default MODES (an earlier eager + compile + 2 runs: 141 s)
  T_EAGER=70; T_COMPILE=130; T_TRAIN=50; T_JPEG=30; JPEG_WORKERS=8; JPEG_IMAGES=1024
fi
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')" | tee "$OUTDIR/env.txt"

for mode in $MODES; do
  if [ "$mode" = eager ]; then flag=""; limit=$T_EAGER; else flag="--compile-mode $mode"; limit=$T_COMPILE; fi
  timeout $limit $PY bench/train_throughput.py --backbone $NET --batch-size $BATCH --image-size 32 $DEV \
    --precision bf16 --channels-last $flag --prefetch --steps $STEPS --warmup $WARM --opt-steps $OPT \
    --json "$OUTDIR/throughput_$mode.json" 2>&1 | tee -a "$OUTDIR/throughput.txt" | grep -v '^{' \
    || echo "throughput $mode failed or timed out" | tee -a "$OUTDIR/throughput.txt"
  echo "  (t=$(( $(date +%s) - T0 ))s)"
done

timeout $T_JPEG $PY bench/jpeg_decode.py --workers $JPEG_WORKERS --images $JPEG_IMAGES \
  --json "$OUTDIR/jpeg_decode.json" 2>&1 | grep -v '^{' || echo "jpeg_decode failed or timed out"
echo "  (t=$(( $(date +%s) - T0 ))s)"

for proj in mlp directclr; do
  timeout $T_TRAIN $PY -m empirical.train --dataset mnist5k --backbone $NET --projector "$proj" $DEV \
    --batch-size $BATCH --precision bf16 --epochs 40 --max-steps $TRAIN_STEPS --warmup-epochs 2 --lr 4.8 --spectrum-every 80 \
    --log-every $LOG --channels-last --no-progress --out "$OUTDIR/mnist5k-$proj" 2>&1 | tail -3 \
    || echo "mnist5k $proj failed"
  echo "  (t=$(( $(date +%s) - T0 ))s)"
done

$PY - "$OUTDIR" "$MODES" <<'PYEOF'
import json, os, sys
out, modes = sys.argv[1], sys.argv[2].split()
eager_full = None
for mode in modes:
    p = os.path.join(out, f"throughput_{mode}.json")
    if not os.path.exists(p):
        print(f"{mode:16s} no result")
        continue
    r = json.load(open(p))
    if mode == "eager":  # the training runs below are eager, with the bench's settings
        eager_full = r["full_views_per_s"]
    mfu = "null" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    print(f"{mode:16s} full {r['full_views_per_s']:8.0f}  prefetch {r.get('full_prefetch_views_per_s', 0):8.0f}  "
          f"model {r['model_views_per_s']:8.0f} views/s  full/model {r['full_over_model']:.3f}  "
          f"augment {r['augment_views_per_s']:8.0f}  LARS {r['optimizer_ms']:.2f} vs loop {r['optimizer_loop_ms']:.2f} ms "
          f"({r['optimizer_speedup']:.1f}x)  mfu {mfu}  peak {r['peak_mem_mb']:.0f} MiB"
          + (f"  one/two calls {r['one_call_over_two_calls']:.3f}" if "one_call_over_two_calls" in r else ""))
for proj in ("mlp", "directclr"):
    p = os.path.join(out, f"mnist5k-{proj}", "metrics.jsonl")
    if os.path.exists(p):
        rows = [json.loads(line) for line in open(p)]
        last = [r for r in rows if "erank_z" in r][-1:] or rows[-1:]
        for r in last:
            keys = ("step", "loss", "probe_acc_heldout", "erank_z", "collapsed_z", "erank_r", "collapsed_r", "img_per_s")
            print(proj, {k: (round(r[k], 3) if isinstance(r.get(k), float) else r.get(k)) for k in keys})
        mid = sorted(2 * r["img_per_s"] for r in rows[1:] if r.get("img_per_s"))
        if mid and eager_full:
            median = mid[len(mid) // 2]
            same = "same settings, goal >= 0.9" if proj == "mlp" else "other projector"
            print(f"  {proj}: median logged rate {median:.0f} views/s = {median / eager_full:.3f} x eager bench full "
                  f"step ({same})")
PYEOF
echo "total $(( $(date +%s) - T0 ))s"
