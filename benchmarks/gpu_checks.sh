#!/usr/bin/env bash
# The device checks of a lent GPU machine, as one script (issues 5 and 7):
# NCCL + bf16 autocast through torchrun (world size 1), a CUDA smoke test of the core losses,
# and the step cost of conv-large and WRN-28-2 with bf16 autocast against the seed's VAT (WRN-28-2 also with
# channels_last, and with torch.compile of torchvat's model).
# Usage (on the device machine, repository root): OUT=/some/dir bash benchmarks/gpu_checks.sh
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, numpy, sklearn, matplotlib, tqdm; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
echo "== core losses on CUDA (fp32 and bf16 autocast, both probes) =="
python - <<'PY'
import torch
from torch import nn
import torchvat
torch.manual_seed(0)
m = nn.Sequential(nn.Linear(64, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 10)).cuda()
x = torch.randn(128, 64, device="cuda")
for amp in (False, True):
    for probe in ("finite_difference", "exact", "auto"):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            snap = torchvat.RNGSnapshot.capture("cuda")
            logits = m(x)
            lds = torchvat.vat_loss(m, x, logits=logits, eps=1e-3, rng=snap, probe=probe)
            big = torchvat.vat_loss(m, x, eps=1.0, probe=probe)
        print(f"amp={amp} probe={probe}: LDS(eps=1e-3)={lds.item():.3e} LDS(eps=1)={big.item():.3e} finite={bool(torch.isfinite(big))}")
PY
echo "== torchrun (NCCL, world size 1) + bf16 autocast: digits VAT =="
timeout 150 torchrun --standalone --nproc_per_node=1 -m torchvat train --dataset digits --labels 100 --method vat \
  --device cuda --amp bf16 --iters 600 --eval-every 300 --out "$OUT/ddp_digits" --no-progress 2>&1 | tail -n 12
ls "$OUT/ddp_digits" 2>/dev/null
echo "== step cost, WRN-28-2, bf16, 32+128 =="
timeout 150 python benchmarks/step_cost.py --model wrn-28-2 --labeled 32 --unlabeled 128 --device cuda --amp \
  --repeats 20 --warmup 3 --steps supervised,seed-vat,torchvat-vat,torchvat-vat-train-step --no-memory 2>&1 | tail -n 16
echo "== step cost, WRN-28-2, bf16, channels_last, 32+128 (every step type in channels_last) =="
timeout 150 python benchmarks/step_cost.py --model wrn-28-2 --labeled 32 --unlabeled 128 --device cuda --amp \
  --channels-last --repeats 20 --warmup 3 --steps supervised,seed-vat,torchvat-vat,torchvat-vat-train-step \
  --no-memory --no-flops 2>&1 | tail -n 9
echo "== step cost, WRN-28-2, bf16, channels_last, torch.compile of torchvat's model (the seed stays eager) =="
timeout 300 python benchmarks/step_cost.py --model wrn-28-2 --labeled 32 --unlabeled 128 --device cuda --amp \
  --channels-last --compile --repeats 20 --warmup 3 --steps supervised,seed-vat,torchvat-vat \
  --no-memory --no-flops 2>&1 | tail -n 10
echo "== step cost, conv-large, bf16, 32+128 =="
timeout 120 python benchmarks/step_cost.py --model conv-large --labeled 32 --unlabeled 128 --device cuda --amp \
  --repeats 20 --warmup 3 --steps supervised,seed-vat,torchvat-vat,torchvat-vat-train-step --no-memory 2>&1 | tail -n 16
