#!/usr/bin/env bash
# The GPU check of issue 4, prepared to run once on the device machine (not part of the suite):
#   1. what MindSpore's GPU plugins would need (Python 3.11, CUDA 11.x runtime, cuDNN 8) is there?
#   2. the launcher's own tests under that machine's Python;
#   3. `mnv2 launch` in dynamic mode, platform GPU, 2 replicas x 1 device: scheduler + 2 workers, each
#      worker on its DEVICE_ID doing CUDA work and an all-reduce with the ranks the launcher gave it.
set -u
export PYTHONPATH=$PWD/trainer PYTHONUNBUFFERED=1
echo "== prerequisites"; nvidia-smi -L; python3 --version
for v in python3.11; do command -v $v || echo "no $v"; done
ldconfig -p | grep -E 'libcudart\.so\.11|libcudnn\.so\.8' || echo "no CUDA 11 runtime / cuDNN 8 in ldconfig"
python3 -c 'import mindspore' 2>&1 | tail -1
echo "== launcher tests (plan + supervision + rank table without pydantic where possible)"
python3 -m pytest -q -p no:cacheprovider -o addopts= tests/launcher/test_launcher_plan.py \
  tests/launcher/test_launcher_supervision.py 2>&1 | tail -5
echo "== mnv2 launch on the GPU: 2 replicas x 1 device"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
common="MNV2_PLATFORM=GPU MNV2_REPLICAS=2 MNV2_DEVICES_PER_REPLICA=1 MNV2_SCHEDULER_HOST=127.0.0.1 MNV2_SCHEDULER_PORT=$port"
env $common MNV2_REPLICA_INDEX=0 timeout 300 python3 -m mnv2 launch -- python3 tests/distributed/gpu_child.py > r0.log 2>&1 &
p0=$!
env $common MNV2_REPLICA_INDEX=1 timeout 300 python3 -m mnv2 launch -- python3 tests/distributed/gpu_child.py > r1.log 2>&1 &
p1=$!
wait $p0; c0=$?; wait $p1; c1=$?
echo "--- replica 0 (exit $c0)"; cat r0.log; echo "--- replica 1 (exit $c1)"; cat r1.log
echo "== a failing GPU rank stops its pod with the trainer's code"
env MNV2_PLATFORM=GPU MNV2_DEVICES_PER_REPLICA=2 timeout 60 python3 -m mnv2 launch -- python3 -c \
  'import os,sys,time; r=os.environ.get("MNV2_RANK"); sys.exit(67) if r=="1" else time.sleep(30)'
echo "exit $? (expected 67)"
