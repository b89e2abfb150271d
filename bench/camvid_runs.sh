#!/usr/bin/env bash
# The CamVid runs reported in the README, one after the other on this machine:
#  1. the camvid-fcn8s recipe (efficient geometry), the main result;
#  2. faithful (pad 100) vs efficient (pad 1) geometry, same recipe, 400 iterations each.
# Usage: bash bench/camvid_runs.sh [runs-folder]   (writes bench/results/camvid_*.json)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
fcnseg=.venv/bin/fcnseg
timed() {  # name, then the train arguments
  local name=$1; shift
  local start=$(date +%s)
  "$fcnseg" train --quiet --out "$runs/$name" "$@"
  local seconds=$(( $(date +%s) - start ))
  "$fcnseg" eval "$runs/$name/best.pt" --json "bench/results/camvid_$name.json" > "$runs/$name/eval.txt"
  .venv/bin/python - "$runs/$name" "bench/results/camvid_$name.json" "$seconds" "$*" <<'PY'
import json, sys
run, path, seconds, args = sys.argv[1:]
result = json.load(open(path))
result.update(train_seconds=int(seconds), command=f"fcnseg train {args}",
              config=json.load(open(f"{run}/config.json")))
json.dump(result, open(path, "w"), indent=2)
PY
  cat "$runs/$name/eval.txt"
}
timed camvid-fcn8s --recipe camvid-fcn8s
short=(--recipe camvid-fcn8s --iterations 400 --warmup 50 --eval-every 400)
timed geometry-efficient "${short[@]}" --pad 1
timed geometry-faithful "${short[@]}" --pad 100
