#!/usr/bin/env bash
# The model zoo's run_eval.sh, on top of `mnv2 eval`.
#
#   run_eval.sh {Ascend|GPU|CPU} DATASET_PATH CHECKPOINT_PATH [--flag value ...]
#
# Prints nothing but where the log is; the result line goes to ./eval.log:
#   result: {'acc': 0.71..., 'top_5_accuracy': 0.90...} ckpt=./checkpoint/mobilenetv2-200_625.ckpt
# The model's shape is read from config.yaml beside the checkpoint (its folder or one up).
set -euo pipefail

MNV2=${MNV2:-mnv2}
if [ $# -lt 3 ]; then
  sed -n '4p' "$0" | sed 's/^# */usage: /' >&2
  exit 64
fi
platform=$1; dataset=$2; ckpt=$3; shift 3
case "$platform" in
  Ascend|GPU|CPU) ;;
  *) echo "run_eval.sh: platform must be Ascend, GPU or CPU, got '$platform'" >&2; exit 64 ;;
esac
echo "evaluating $ckpt on $platform; log: $PWD/eval.log"
exec "$MNV2" eval --platform "$platform" --dataset_path "$dataset" --pretrain_ckpt "$ckpt" "$@" >"$PWD/eval.log" 2>&1
