#!/usr/bin/env bash
# The device checks of a lent GPU machine, as one script (issues 5 and 7), most wanted first:
#   1. the CUDA-only paths of the trainer's non-finite guard (foreach gradient flags, buffer snapshot),
#      and the probe under TF32 (what "auto" picks; one power step's accuracy with TF32 on and off);
#   2. step cost of WRN-28-2 (bf16, 32 + 128) eager, channels_last, and torch.compile of the model
#      (default mode and reduce-overhead = CUDA graphs), the seed compiled alike;
#   3. step cost of conv-large (bf16);
#   4. core losses on CUDA and torchrun (NCCL, world size 1) + bf16 autocast.
# Every section appends to $OUT/gpu_checks.log as it runs, so a run cut short still returns what it
# measured. The timeouts add up to 550 s (the device tool allows 600 s per command).
# Usage (on the device machine, repository root): OUT=/some/dir bash benchmarks/gpu_checks.sh
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_checks.log"
exec > >(tee -a "$LOG") 2>&1
TEE=$!
SC="python benchmarks/step_cost.py --labeled 32 --unlabeled 128 --device cuda --amp --repeats 20 --warmup 3 --no-memory"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, numpy, sklearn, matplotlib, tqdm; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

echo "== 1. non-finite guard on CUDA: foreach flags = per-tensor flags, buffers restored, a NaN step skipped =="
timeout 50 python - <<'PY'
import torch
from torch import nn
from torchvat.train import Trainer
from torchvat.train.finite import BufferSnapshot, grad_finite_flags
g = [torch.randn(300, 200, device="cuda"), None, torch.randn(7, device="cuda").bfloat16(), torch.randn(5, device="cuda")]
g[3][2] = float("nan")
a, b = grad_finite_flags(g), grad_finite_flags(g, foreach=False)
print("flags foreach", a.tolist(), "per-tensor", b.tolist(), "equal", torch.equal(a, b))
bn = nn.BatchNorm2d(4).to("cuda").train()
snap = BufferSnapshot(list(bn.buffers()))
bn(torch.randn(8, 4, 3, 3, device="cuda"))
snap.restore(torch.zeros((), dtype=torch.bool, device="cuda"))
print("buffers restored:", float(bn.running_mean.abs().sum()) == 0.0 and int(bn.num_batches_tracked) == 0)
torch.manual_seed(0)
x = torch.randn(256, 8)
y = (x[:, 0] > 0).long()
m = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))
t = Trainer(m, x_labeled=x[:32], y_labeled=y[:32], x_unlabeled=x[32:], method="vat", eps=0.5, device="cuda",
            batch_size=16, unlabeled_batch_size=64, nonfinite="skip", progress=False)
t.train_step(t.next_batch())
before = [p.detach().clone() for p in t.model.parameters()] + [b.clone() for b in t.model.buffers()]
with torch.no_grad():
    t.model[0].weight[0, 0] = float("nan")
    before[0][0, 0] = float("nan")
t.train_step(t.next_batch())
after = [p.detach() for p in t.model.parameters()] + list(t.model.buffers())
same = all(torch.equal(u.nan_to_num(), v.nan_to_num()) for u, v in zip(before, after))
print("NaN step skipped on the device:", same, "| ok flag:", bool(t.last_step_ok))
PY

echo "== 1b. TF32 on CUDA: the probe 'auto' picks, and one power step's |cos| with the float64 product =="
timeout 40 python - <<'PY'
import sys, torch, torch.nn.functional as F
sys.path.insert(0, "benchmarks")
from direction_accuracy import exact_product
from torchvat import virtual_adversarial_perturbation
from torchvat.core.perturbation import l2_normalize, resolve_probe
from torchvat.models import build_model
torch.manual_seed(0)
model = build_model("wrn-28-2", input_shape=(3, 32, 32), n_classes=10).eval().cuda()
x = torch.randn(16, 3, 32, 32, device="cuda")
d = l2_normalize(torch.randn(x.shape, generator=torch.Generator("cuda").manual_seed(1), device="cuda"))
ref = exact_product(model, x, d).flatten(1)
for tf32 in (True, False):
    torch.backends.cudnn.allow_tf32 = tf32
    print(f"cudnn.allow_tf32={tf32}: auto -> {resolve_probe('auto', x, model)}")
    for probe in ("finite_difference", "exact"):
        r = virtual_adversarial_perturbation(model, x, eps=1e3, n_power=1, probe=probe,
                                             generator=torch.Generator("cuda").manual_seed(1))
        cos = F.cosine_similarity(r.flatten(1).double(), ref, dim=1).abs()
        print(f"  {probe}: |cos| min {cos.min():.3f} mean {cos.mean():.3f}")
torch.backends.cudnn.allow_tf32 = True
PY

echo "== 2a. step cost, WRN-28-2, bf16 (eager) =="
timeout 80 $SC --model wrn-28-2 --steps supervised,seed-vat,torchvat-vat,torchvat-vat-train-step 2>&1 | tail -n 9
echo "== 2b. step cost, WRN-28-2, bf16, channels_last (every step type) =="
timeout 60 $SC --model wrn-28-2 --channels-last --no-flops \
  --steps supervised,seed-vat,torchvat-vat,torchvat-vat-train-step 2>&1 | tail -n 9
echo "== 2c. step cost, WRN-28-2, bf16, channels_last, torch.compile (default mode; seed and torchvat compiled alike) =="
timeout 120 $SC --model wrn-28-2 --channels-last --no-flops --compile --steps supervised,seed-vat,torchvat-vat 2>&1 \
  | grep -v "^W[0-9]" | tail -n 16
echo "== 2d. step cost, WRN-28-2, bf16, channels_last, torch.compile mode=reduce-overhead (CUDA graphs) =="
timeout 90 $SC --model wrn-28-2 --channels-last --no-flops --compile reduce-overhead --steps seed-vat,torchvat-vat \
  2>&1 | grep -v "^W[0-9]" | tail -n 14
echo "== 3. step cost, conv-large, bf16 =="
timeout 45 $SC --model conv-large --steps supervised,seed-vat,torchvat-vat,torchvat-vat-train-step 2>&1 | tail -n 9

echo "== 4a. core losses on CUDA (fp32 and bf16 autocast, both probes) =="
timeout 15 python - <<'PY'
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
echo "== 4b. torchrun (NCCL, world size 1) + bf16 autocast: digits VAT =="
timeout 50 torchrun --standalone --nproc_per_node=1 -m torchvat train --dataset digits --labels 100 --method vat \
  --device cuda --amp bf16 --iters 600 --eval-every 300 --out "$OUT/ddp_digits" --no-progress 2>&1 | tail -n 12
ls "$OUT/ddp_digits" 2>/dev/null
echo "== done =="
exec >&- 2>&-  # let tee see the end of its input and flush the log
wait "$TEE"
