"""Stand-in trainer for the GPU check of the launcher (device machine only; PyTorch, not MindSpore).

The device machine has no MindSpore (its wheel is cp311 and needs CUDA 11.x; the machine has
Python 3.12 and CUDA 13), so this checks what the launcher itself promises on a GPU node: each
worker's DEVICE_ID names a usable CUDA device, and MNV2_RANK/WORLD_SIZE plus the scheduler address
are enough to form a collective across the processes of several "pods" (gloo over 127.0.0.1,
rendezvous on MS_SCHED_PORT + 1, since NCCL refuses two ranks on the one GPU there is).
"""

import os
import sys

import torch
import torch.distributed as dist

if os.environ.get("MS_ROLE") == "MS_SCHED":
    print("scheduler role: nothing to schedule for PyTorch", flush=True)
    sys.exit(0)
rank = int(os.environ["MNV2_RANK"])
world = int(os.environ["MNV2_WORLD_SIZE"])
device = int(os.environ["DEVICE_ID"])
assert os.environ["MS_ROLE"] == "MS_WORKER" and os.environ["MS_NODE_ID"] == str(rank)
torch.cuda.set_device(device)
x = torch.randn(256, 256, device="cuda", generator=torch.Generator("cuda").manual_seed(rank))
local = (x @ x.T).trace().double().cpu()
host, port = os.environ["MS_SCHED_HOST"], int(os.environ["MS_SCHED_PORT"]) + 1
dist.init_process_group("gloo", init_method=f"tcp://{host}:{port}", rank=rank, world_size=world)
total = local.clone()
dist.all_reduce(total)
gathered = [torch.zeros((), dtype=torch.float64) for _ in range(world)]
dist.all_gather(gathered, local)
assert torch.allclose(total, sum(gathered)), (total, gathered)
print(f"rank {rank}/{world} on cuda:{device} ({torch.cuda.get_device_name(device)}): "
      f"local {local.item():.3f}, all-reduced {total.item():.3f}", flush=True)
dist.destroy_process_group()
