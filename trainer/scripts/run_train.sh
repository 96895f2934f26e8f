#!/usr/bin/env bash
# The model zoo's run_train.sh, kept working on top of `mnv2 train` / `mnv2 launch`.
#
#   run_train.sh Ascend DEVICE_NUM VISIBLE_DEVICES RANK_TABLE_FILE DATASET_PATH [CKPT_PATH] [FREEZE_LAYER] [--flag value ...]
#   run_train.sh GPU    DEVICE_NUM VISIBLE_DEVICES DATASET_PATH [CKPT_PATH] [FREEZE_LAYER] [--flag value ...]
#   run_train.sh CPU    DATASET_PATH [CKPT_PATH] [FREEZE_LAYER] [--flag value ...]
#
# FREEZE_LAYER is none (fine-tune everything) or backbone (train the head only). Any `--flag value`
# after the positional arguments goes to `mnv2 train` (e.g. --epochs 2 --batch_size 32).
# Output goes to the current folder: ./train.log, ./checkpoint/, ./config.yaml.
# Multi-device runs start one process per device through `mnv2 launch`.
set -euo pipefail

MNV2=${MNV2:-mnv2}

usage() {
  sed -n '4,6p' "$0" | sed 's/^# */usage: /' >&2
  exit 64
}

platform=${1:-}
[ $# -gt 0 ] && shift
devices=1
visible=""
table=""
case "$platform" in
  CPU)
    [ $# -ge 1 ] || usage
    dataset=$1; shift ;;
  GPU)
    [ $# -ge 3 ] || usage
    devices=$1; visible=$2; dataset=$3; shift 3 ;;
  Ascend)
    [ $# -ge 4 ] || usage
    devices=$1; visible=$2; table=$3; dataset=$4; shift 4 ;;
  *)
    usage ;;
esac
case "$devices" in
  ''|*[!0-9]*) echo "run_train.sh: DEVICE_NUM must be a number, got '$devices'" >&2; exit 64 ;;
esac

ckpt=""
freeze=""
if [ $# -gt 0 ] && [[ $1 != --* ]]; then ckpt=$1; shift; fi
if [ $# -gt 0 ] && [[ $1 != --* ]]; then freeze=$1; shift; fi

args=(--platform "$platform" --dataset_path "$dataset" --output_dir "$PWD")
[ -n "$ckpt" ] && args+=(--pretrain_ckpt "$ckpt")
[ -n "$freeze" ] && args+=(--freeze_layer "$freeze")
args+=("$@")

if [ "$devices" -le 1 ]; then
  [ -n "$visible" ] && [ "$platform" = GPU ] && export CUDA_VISIBLE_DEVICES="$visible"
  echo "training on $platform; log: $PWD/train.log, checkpoints: $PWD/checkpoint"
  exec "$MNV2" train "${args[@]}" >"$PWD/train.log" 2>&1
fi

if ! "$MNV2" launch --help >/dev/null 2>&1; then
  echo "run_train.sh: $devices devices need \`mnv2 launch\`, which this installation lacks" >&2
  exit 64
fi
export MNV2_PLATFORM="$platform" MNV2_REPLICAS=1 MNV2_REPLICA_INDEX=0 MNV2_DEVICES_PER_REPLICA="$devices"
export MNV2_COMMAND=train MNV2_SCHEDULER_HOST=127.0.0.1
if [ "$platform" = Ascend ]; then
  [ -f "$table" ] || { echo "run_train.sh: RANK_TABLE_FILE $table: no such file" >&2; exit 64; }
  export MNV2_LAUNCH_MODE=ranktable MNV2_RANK_TABLE_FILE="$(cd "$(dirname "$table")" && pwd)/$(basename "$table")"
  export ASCEND_VISIBLE_DEVICES="$visible"
else
  export MNV2_LAUNCH_MODE=dynamic CUDA_VISIBLE_DEVICES="$visible"
fi
echo "training on $devices x $platform; log: $PWD/train.log, checkpoints: $PWD/checkpoint"
exec "$MNV2" launch -- "$MNV2" train "${args[@]}" >"$PWD/train.log" 2>&1
