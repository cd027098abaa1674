#!/usr/bin/env bash
# The device checks of a lent GPU machine, as one script (issues 5, 7 and 18), most wanted first:
#   5. issue 18: the TPAMI MNIST setting (recipe mnist-100: MLP 784-1200-600-300-150-10 with Gaussian
#      noise sd 0.5 on the hidden layers, eps 5.0) trained to completion (the recipe's 48,000
#      iterations) on Fashion-MNIST, 100 labels, seed 0, from the IDX files it is given;
#   6. issue 18: step cost of that MLP (fp32, 32 + 128) eager and torch.compile'd (default mode, and
#      reduce-overhead = CUDA graphs), against the seed's step, eager and compiled alike;
#   1. the CUDA-only paths of the trainer's non-finite guard (foreach gradient flags, buffer snapshot),
#      and the probe under TF32 (what "auto" picks; one power step's accuracy with TF32 on and off);
#   2. step cost of WRN-28-2 (bf16, 32 + 128) eager, channels_last, and torch.compile of the model
#      (default mode and reduce-overhead = CUDA graphs), the seed compiled alike;
#   3. step cost of conv-large (bf16);
#   4. core losses on CUDA and torchrun (NCCL, world size 1) + bf16 autocast.
# Every section appends to $OUT/gpu_checks.log as it runs, so a run cut short still returns what it
# measured; sections 2, 5 and 6 also write their tables to $OUT/*.md.
#
# GPU time, estimated for one H100 (timeouts in brackets): 5: ~220 s (an eager VAT step of the MLP
# is bound by its ~500 operator launches, ~4 ms, x 48,000, plus five evaluations) [330];
# 6: ~80 + ~60 s (two compilations each) [120 + 80]; 1: ~20 + ~25 [40 + 35]; 2: ~60 + ~110 + ~70
# [70 + 120 + 80]; 3: ~30 [40]; 4: ~10 + ~30 [15 + 45]: about 715 s, 12 minutes, in all.
# The device tool allows 600 s per command: run it as two commands, sections 5 and 6 (530 s at
# most) and sections 1 to 4 (445 s at most) (section 2b, channels_last eager, is now part of 2c):
#   OUT=$OUT SECTIONS="5 6" bash benchmarks/gpu_checks.sh
#   OUT=$OUT SECTIONS="1 2 3 4" bash benchmarks/gpu_checks.sh
# Usage (on the device machine, repository root): OUT=/some/dir bash benchmarks/gpu_checks.sh
# Environment: SECTIONS (default "5 6 1 2 3 4"); FASHION_MNIST, the folder of the four Fashion-MNIST
# IDX files (default: shared/fashion-mnist when it exists, else torchvat's search: $TORCHVAT_DATA,
# /usr/share/datasets/fashion-mnist, ~/.cache/torchvat/data); for a CPU smoke run of sections 5 and
# 6: DEVICE (default cuda), TPAMI_ITERS (default: the recipe's), REPEATS (default 20).
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}
SECTIONS=${SECTIONS:-"5 6 1 2 3 4"}
DEVICE=${DEVICE:-cuda}
TPAMI_ITERS=${TPAMI_ITERS:-recipe}
REPEATS=${REPEATS:-20}
mkdir -p "$OUT"
LOG="$OUT/gpu_checks.log"
exec > >(tee -a "$LOG") 2>&1
TEE=$!
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
SC="python benchmarks/step_cost.py --labeled 32 --unlabeled 128 --device cuda --amp --repeats 20 --warmup 3 --no-memory"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, numpy, sklearn, matplotlib, tqdm; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
echo "sections: $SECTIONS"

if want 5; then
echo "== 5. the TPAMI MNIST setting (recipe mnist-100) on Fashion-MNIST, 100 labels, seed 0, to completion =="
FM=${FASHION_MNIST:-}
if [[ -z "$FM" && -d shared/fashion-mnist ]]; then FM=shared/fashion-mnist; fi
ROOT_ARG=()
if [[ -n "$FM" ]]; then ROOT_ARG=(--data-root "$FM"); fi
if python -c "import sys; from torchvat.data.fashion_mnist import find_fashion_mnist as f; print('files:', f(sys.argv[1] or None))" "$FM"; then
  timeout 330 python benchmarks/fashion_mnist_recipes.py --rows tpami --seeds 1 --labels 100 --iterations "$TPAMI_ITERS" \
    --device "$DEVICE" "${ROOT_ARG[@]}" --table "$OUT/fashion_mnist_tpami.md"
else
  echo "section 5 skipped (the error above): give the folder of the Fashion-MNIST IDX files with FASHION_MNIST=DIR"
fi
fi

if want 6; then
MLP="python benchmarks/step_cost.py --model mlp --labeled 32 --unlabeled 128 --device $DEVICE --repeats $REPEATS --warmup 3 --no-memory --no-flops"
echo "== 6a. step cost, MNIST MLP (the TPAMI network, without its noise), fp32, eager and torch.compile (default mode), the seed compiled alike =="
timeout 120 $MLP --compile --steps supervised,seed-vat,torchvat-vat,torchvat-vat-train-step 2>&1 | grep -v "^W[0-9]" \
  | tee "$OUT/step_cost_mlp_compile.md" | tail -n 16
if [[ "$DEVICE" == cuda ]]; then
echo "== 6b. step cost, MNIST MLP, fp32, torch.compile mode=reduce-overhead (CUDA graphs), the seed compiled alike =="
timeout 80 $MLP --compile reduce-overhead --steps seed-vat,torchvat-vat 2>&1 | grep -v "^W[0-9]" \
  | tee "$OUT/step_cost_mlp_cudagraphs.md" | tail -n 14
fi
fi

if want 1; then

echo "== 1. non-finite guard on CUDA: foreach flags = per-tensor flags, buffers restored, a NaN step skipped =="
timeout 40 python - <<'PY'
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
timeout 35 python - <<'PY'
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
fi

if want 2; then

echo "== 2a. step cost, WRN-28-2, bf16 (eager) =="
timeout 70 $SC --model wrn-28-2 --steps supervised,seed-vat,torchvat-vat,torchvat-vat-train-step 2>&1 \
  | tee "$OUT/step_cost_wrn.md" | tail -n 9
echo "== 2c. step cost, WRN-28-2, bf16, channels_last (every step type eager), torch.compile (default mode; seed and torchvat compiled alike) =="
timeout 120 $SC --model wrn-28-2 --channels-last --no-flops --compile \
  --steps supervised,seed-vat,torchvat-vat,torchvat-vat-train-step 2>&1 | grep -v "^W[0-9]" \
  | tee "$OUT/step_cost_wrn_compile.md" | tail -n 17
echo "== 2d. step cost, WRN-28-2, bf16, channels_last, torch.compile mode=reduce-overhead (CUDA graphs) =="
timeout 80 $SC --model wrn-28-2 --channels-last --no-flops --compile reduce-overhead --steps seed-vat,torchvat-vat \
  2>&1 | grep -v "^W[0-9]" | tee "$OUT/step_cost_wrn_cudagraphs.md" | tail -n 14
fi

if want 3; then
echo "== 3. step cost, conv-large, bf16 =="
timeout 40 $SC --model conv-large --steps supervised,seed-vat,torchvat-vat,torchvat-vat-train-step 2>&1 \
  | tee "$OUT/step_cost_conv_large.md" | tail -n 9
fi

if want 4; then

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
timeout 45 torchrun --standalone --nproc_per_node=1 -m torchvat train --dataset digits --labels 100 --method vat \
  --device cuda --amp bf16 --iters 600 --eval-every 300 --out "$OUT/ddp_digits" --no-progress 2>&1 | tail -n 12
ls "$OUT/ddp_digits" 2>/dev/null
fi
echo "== done =="
exec >&- 2>&-  # let tee see the end of its input and flush the log
wait "$TEE"
