#!/bin/bash
# The product on one dataset with its defaults: train (floor + validation prior) -> export (choices on validation
# users) -> eval-bundle (the runtime on test users vs the simple baselines, paired). Session 8, issue 20.
# With FP32=1, also eval-bundle --checkpoint (the bundle against its fp32 prior, paired; popularity beside it).
# Each step's wall time and peak memory go to OUTDIR/NAME.times.txt (GNU time).
# usage: [FP32=1] bash lab/product_chain.sh NAME DATASET [OUTDIR] [TRAIN_CONFIG.json]   (keys: artifacts/keys from `make demo`)
set -euo pipefail
N=$1; D=$2; O=${3:-runs/chain}; C=${4:-}
mkdir -p "$O"
export OMP_NUM_THREADS=1
M=.venv/bin/metarec
T=(/usr/bin/time -a -o "$O/$N.times.txt" -f "%C: %e s, %M KB")
"${T[@]}" $M train --dataset "$D" ${C:+--config "$C"} --out "$O/$N.pt" --quiet | tee "$O/$N.train.txt"
"${T[@]}" $M export "$O/$N.pt" --out "$O/$N.bundle" --key artifacts/keys/private.pem --no-onnx | tee "$O/$N.export.txt"
"${T[@]}" $M eval-bundle "$O/$N.bundle" --key artifacts/keys/public.pem --dataset "$D" --json "$O/$N.evb.json"
if [ "${FP32:-0}" = 1 ]; then
  "${T[@]}" $M eval-bundle "$O/$N.bundle" --key artifacts/keys/public.pem --dataset "$D" --checkpoint "$O/$N.pt" \
    --baselines popularity --json "$O/$N.fp32.json" > "$O/$N.fp32.txt"
fi
