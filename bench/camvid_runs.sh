#!/usr/bin/env bash
# The CamVid runs reported in the README, on this machine's 2 CPU cores:
#   bash bench/camvid_runs.sh main            # the camvid-fcn8s recipe (the README's result)
#   bash bench/camvid_runs.sh heldout [FLAG...]  # camvid-fcn8s-heldout: chosen and scored on
#                         # drive 0006R0, which it never trains on; FLAGs change the recipe
#                         # (an ablation: its run is named after them)
#   bash bench/camvid_runs.sh trainval [FLAG...]  # camvid-fcn8s-trainval: the held-out
#                         # drive's choice, trained on train + val (the final CamVid model);
#                         # FLAGs name the run as for heldout
#   bash bench/camvid_runs.sh name heldout|trainval [FLAG...]  # prints the run's name (its
#                         # folder under runs/): the recipe and FLAGs, and past 200
#                         # characters cut to 191 and ended by 8 hex digits of the whole
#                         # name's SHA-1, so that every result file's name stays under the
#                         # 255-byte limit (the full command is in the run's result file)
#   bash bench/camvid_runs.sh tta RUN   # RUN's best.pt with --tta flip, then with flip and
#                         # scales 0.75 1 1.25 (bench/results/camvid_RUN_tta-flip[-ms].json)
#   bash bench/camvid_runs.sh clip RUN  # RUN's best.pt and last.pt fed clipped to 0-255 after
#                         # the balance it trained with (--normalization imagenet-greyworld-clip;
#                         # bench/results/camvid_RUN_clip-{best,last}.json), and last.pt balanced
#                         # unclipped (camvid_RUN_last.json); best.pt too if RUN validated
#                         # clipped (--val-normalization; camvid_RUN_balanced-best.json)
#   bash bench/camvid_runs.sh geometry [N] [SEED...]
#                         # faithful (pad 100) vs efficient (pad 1), the same recipe
#                         # shortened to N iterations, once per seed (default: seed 0)
# Each run's metrics go to bench/results/camvid_<run>.json with its command and wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=runs
fcnseg=.venv/bin/fcnseg

record() {  # name, seconds, the train arguments
  local name=$1 seconds=$2; shift 2
  # torch fp32: what the training-time evaluation computes, on any machine
  "$fcnseg" eval "$runs/$name/best.pt" --backend torch --precision fp32 \
    --json "bench/results/camvid_$name.json" | tee "$runs/$name/eval.txt"
  .venv/bin/python - "$runs/$name" "bench/results/camvid_$name.json" "$seconds" "$*" <<'PY'
import json, sys
run, path, seconds, args = sys.argv[1:]
result = json.load(open(path))
result.update(train_seconds=int(seconds), command=f"fcnseg train {args}",
              config=json.load(open(f"{run}/config.json")))
json.dump(result, open(path, "w"), indent=2)
PY
  cp "$runs/$name/metrics.jsonl" "bench/results/camvid_$name.metrics.jsonl"
}

MAX_NAME=200  # the longest suffix a result file adds is 25 bytes (_balanced-best.json)

run_name() {  # recipe, then the FLAGs: the run's folder name (see the usage above)
  local recipe=$1 suffix name
  shift
  # ':' (a split's drives) is not allowed in file names on every system
  suffix=$(printf '%s' "$*" | sed 's/--//g' | tr ' :' '_-')
  name="$recipe${suffix:+_$suffix}"
  if [ "${#name}" -gt "$MAX_NAME" ]; then
    name="${name:0:$(( MAX_NAME - 9 ))}_$(printf '%s' "$name" | sha1sum | cut -c1-8)"
  fi
  printf '%s\n' "$name"
}

timed() {  # name, then the train arguments
  local name=$1; shift
  local start
  start=$(date +%s)
  "$fcnseg" train --quiet --out "$runs/$name" "$@"
  record "$name" $(( $(date +%s) - start )) "$@"
}

# One function, called on the script's last line: bash has read all of it before the
# first run starts, so editing this file during an hours-long run cannot break it.
main() {
case "${1:-main}" in
  main) timed camvid-fcn8s --recipe camvid-fcn8s ;;
  heldout|trainval)
    recipe=camvid-fcn8s-$1
    shift
    timed "$(run_name "$recipe" "$@")" --recipe "$recipe" "$@" ;;
  name)
    case "${2:-}" in
      heldout|trainval) run_name "camvid-fcn8s-$2" "${@:3}" ;;
      *) echo "usage: $0 name heldout|trainval [flag...]" >&2; exit 2 ;;
    esac ;;
  tta)
    run=${2:?usage: $0 tta RUN (a folder under runs/)}
    tta() {  # name, then the views beside --tta flip
      local name=$1; shift
      "$fcnseg" eval "$runs/$run/best.pt" --backend torch --precision fp32 --tta flip "$@" \
        --json "bench/results/camvid_${run}_tta-$name.json"
    }
    tta flip
    tta flip-ms --tta-scales 0.75 1 1.25 ;;
  clip)
    run=${2:?usage: $0 clip RUN (a folder under runs/, trained with imagenet-greyworld)}
    fed() {  # weights (best or last), normalization, the result file's suffix
      "$fcnseg" eval "$runs/$run/$1.pt" --backend torch --precision fp32 \
        --normalization "$2" --json "bench/results/camvid_${run}_$3.json"
    }
    fed best imagenet-greyworld-clip clip-best
    fed last imagenet-greyworld-clip clip-last
    # the last weights balanced without the clip, beside them (the run's own file has the
    # best's as it validated: unclipped, unless it ran with --val-normalization)
    fed last imagenet-greyworld last
    validated=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["normalization"])' \
      "bench/results/camvid_$run.json")
    if [ "$validated" != imagenet-greyworld ]; then
      fed best imagenet-greyworld balanced-best
    fi ;;
  geometry)
    n=${2:-400}
    seeds=("${@:3}")
    short=(--recipe camvid-fcn8s --iterations "$n" --warmup 50 --eval-every "$n")
    for seed in "${seeds[@]:-0}"; do
      timed "geometry-efficient-seed$seed" "${short[@]}" --pad 1 --seed "$seed"
      timed "geometry-faithful-seed$seed" "${short[@]}" --pad 100 --seed "$seed"
    done ;;
  *) echo "usage: $0 main | heldout [flag...] | trainval [flag...] | name heldout|trainval [flag...] | tta RUN | clip RUN | geometry [iterations] [seed...]" >&2; exit 2 ;;
esac
}

main "$@"; exit
