#!/usr/bin/env bash
# The skip nets compared on CamVid (the paper's Table 2 / Figure 4; issue #11), on 2 CPU cores:
#   bash bench/skip_nets.sh [N]     (default 400, as the README reports)
# Staged as section 4.2: FCN-32s from scratch for 2 x N iterations, FCN-16s from it for N,
# FCN-8s from that for N; FCN-8s at-once from scratch for the staged total (4 x N). Every run
# is the camvid-fcn8s recipe (same backbone, data, crop, batch, optimiser) with only the model,
# the start and the length changed; the fine-tuning stages use a tenth of its lr.
# Writes bench/results/skip_nets.json (val metrics, per-class IU, wall times) and
# bench/results/skip_nets.png (the same val images through each net).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-400}
runs=runs/skip-nets
fcnseg=.venv/bin/fcnseg
recipe=(--recipe camvid-fcn8s --quiet --overwrite --eval-every "$n")
mkdir -p "$runs"

timed() {  # name, then the train arguments; wall seconds go to $runs/<name>/seconds
  local name=$1 start
  shift
  start=$(date +%s)
  "$fcnseg" train "${recipe[@]}" --out "$runs/$name" "$@"
  echo $(( $(date +%s) - start )) > "$runs/$name/seconds"
  echo "fcnseg train ${recipe[*]} --out $runs/$name $*" > "$runs/$name/command"
  "$fcnseg" eval "$runs/$name/last.pt" --json "$runs/$name/eval.json"
}

timed fcn32s --model fcn32s --iterations $((2 * n))
timed fcn16s --model fcn16s --iterations "$n" --lr 2e-4 --warmup 0 --init-from "$runs/fcn32s/last.pt"
timed fcn8s --model fcn8s --iterations "$n" --lr 2e-4 --warmup 0 --init-from "$runs/fcn16s/last.pt"
timed fcn8s-atonce --model fcn8s-atonce --iterations $((4 * n))
.venv/bin/python bench/skip_nets.py "$runs"
