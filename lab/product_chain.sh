#!/bin/bash
# The product on one dataset with its defaults: train (floor + validation prior) -> export (choices on validation
# users) -> eval-bundle (the runtime on test users vs the simple baselines, paired). Session 8, issue 20.
# usage: bash lab/product_chain.sh NAME DATASET [OUTDIR] [TRAIN_CONFIG.json]   (keys: artifacts/keys from `make demo`)
set -euo pipefail
N=$1; D=$2; O=${3:-runs/chain}; C=${4:-}
mkdir -p "$O"
export OMP_NUM_THREADS=1
M=.venv/bin/metarec
$M train --dataset "$D" ${C:+--config "$C"} --out "$O/$N.pt" --quiet | tee "$O/$N.train.txt"
$M export "$O/$N.pt" --out "$O/$N.bundle" --key artifacts/keys/private.pem --no-onnx | tee "$O/$N.export.txt"
$M eval-bundle "$O/$N.bundle" --key artifacts/keys/public.pem --dataset "$D" --json "$O/$N.evb.json"
