#!/bin/bash
# Every subcommand once on a GPU (digits; no data files needed): train, defend (smoothing, a filter,
# distillation, ensemble AT), audit, detect, certify, fool, evaluate with a spread of attacks.
# Usage: bash benchmarks/gpu_smoke.sh [DEVICE] [FOLDER]   (default: cuda, /tmp/sparring-gpu-smoke)
# Prints each command's last lines and its exit code (audit exits 1 when its verdict is "fail").
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
D="--device ${1:-cuda}"
W=${2:-/tmp/sparring-gpu-smoke}
mkdir -p "$W"
r() { echo "== $*"; python3 -m sparring "$@" 2>&1 | grep -vE "^(student |teacher )?epoch " | tail -3; echo "rc=${PIPESTATUS[0]}"; }
r train --dataset digits --model digits-cnn --epochs 10 --out $W/m $D
r defend --dataset digits --model digits-cnn --defense randomized-smoothing:sigma=0.25 --epochs 10 --out $W/s $D
r defend --dataset digits --model $W/m.safetensors --defense median-blur:window=3 --epochs 0 --out $W/mb $D
r defend --dataset digits --model digits-cnn --defense distillation --epochs 3 --out $W/dd $D
r defend --dataset digits --model digits-cnn --defense ensemble-at:surrogates=digits-cnn --eps 0.1 --epochs 2 --out $W/ens $D
r audit --dataset digits --model $W/m.safetensors --eps 0.05,0.1 --n 100 $D
r audit --dataset digits --model $W/mb.safetensors --eps 0.1 --n 100 $D
r audit --dataset digits --model $W/m.safetensors --planted noise --eps 0.1 --n 100 $D
r detect --dataset digits --model $W/m.safetensors --eps 0.1 --n 100 $D
r detect --dataset digits --model $W/m.safetensors --detector feature-squeezing --eps 0.1 --n 100 $D
r certify --dataset digits --model $W/s.safetensors --n 20 --samples 1000 $D
r fool --dataset digits --model $W/m.safetensors --steps 50 --out $W/f $D
r evaluate --dataset digits --model $W/mb.safetensors --attack pgd:steps=10 --attack square:queries=100 --attack cw-l2:norm=l2,steps=50 --attack universal --eps 0.1 --n 60 $D
r evaluate --dataset digits --model $W/m.safetensors --attack apgd --attack strong --attack lbfgs:norm=l2 --attack substitute --eps 0.1 --n 60 $D
