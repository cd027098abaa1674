#!/usr/bin/env bash
# The device checks of a machine with several GPUs (issue 20), the multi-GPU part of gpu_checks.sh:
#   1. NCCL, world size = every GPU: two uninterrupted torchrun runs of digits/VAT (dropout) give the
#      same weights (or say by how much they differ: cuDNN/atomics may not be bitwise on a GPU);
#   2. exact resume under NCCL: one worker SIGKILLed after a checkpoint, the run rerun with --resume,
#      compared with run 1 (the per-rank CUDA generators come back from the checkpoint's "ranks");
#   3. elastic restart: torchrun --max-restarts=1 ... --resume with one worker SIGKILLed;
#   4. SyncBatchNorm (--sync-batchnorm, CUDA only): two processes' running statistics equal each
#      other and one process on the concatenated batch (float tolerance);
#   5. --dist-timeout under NCCL: a worker started without torchrun's agent is SIGSTOPped; the
#      survivor's message (or NCCL's watchdog) is printed, with the time it took.
# UNVERIFIED: written without a multi-GPU machine (the lent machines have one GPU); run it when one
# is available and record the output in BENCHMARKS.md. Every section appends to $OUT/gpu_checks_multi.log.
# Usage (repository root, 2+ GPUs): OUT=/some/dir bash benchmarks/gpu_checks_multi.sh
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_checks_multi.log"
exec > >(tee -a "$LOG") 2>&1
TEE=$!
NGPU=$(python -c "import torch; print(torch.cuda.device_count())")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "GPUs: $NGPU"
if [ "$NGPU" -lt 2 ]; then echo "needs at least 2 GPUs"; exit 1; fi
TRAIN=(-m torchvat train --dataset digits --method vat --device cuda --iters 300 --checkpoint-every 50
       --eval-every 100 --log-every 25 --model-option dropout=0.2 --no-progress --seed 3)
compare() {  # compare A/last.pt B/last.pt: max |difference| of the weights, and whether every rank's state is equal
  python - "$1" "$2" <<'PY'
import sys
from torchvat.train import load_checkpoint
a, b = (load_checkpoint(f"{p}/last.pt") for p in sys.argv[1:3])
diff = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
print(f"steps {a['step']} {b['step']}; max |weight difference| {diff:.3g}; bitwise: {diff == 0}")
PY
}
kill_rank1_after_checkpoint() {  # $1: torchrun pid, $2: run folder
  while [ ! -f "$2/last.pt" ]; do sleep 0.05; done
  for pid in $(pgrep -P "$1"); do
    if tr '\0' '\n' < "/proc/$pid/environ" | grep -qx "RANK=1"; then kill -9 "$pid"; echo "killed rank 1 ($pid)"; fi
  done
}

echo "== 1. NCCL, world size $NGPU: two uninterrupted runs =="
for run in a b; do
  timeout 120 torchrun --standalone --nproc_per_node="$NGPU" "${TRAIN[@]}" --out "$OUT/multi_$run" 2>&1 | tail -n 4
done
compare "$OUT/multi_a" "$OUT/multi_b"

echo "== 2. NCCL: a worker killed after a checkpoint, rerun with --resume =="
timeout 120 torchrun --standalone --nproc_per_node="$NGPU" "${TRAIN[@]}" --out "$OUT/multi_kill" > "$OUT/kill.txt" 2>&1 &
kill_rank1_after_checkpoint $! "$OUT/multi_kill"
wait
timeout 120 torchrun --standalone --nproc_per_node="$NGPU" "${TRAIN[@]}" --resume --out "$OUT/multi_kill" 2>&1 | tail -n 4
compare "$OUT/multi_a" "$OUT/multi_kill"

echo "== 3. NCCL: torchrun --max-restarts=1 ... --resume, a worker killed =="
timeout 150 torchrun --standalone --nproc_per_node="$NGPU" --max-restarts=1 "${TRAIN[@]}" --resume \
  --out "$OUT/multi_elastic" > "$OUT/elastic.txt" 2>&1 &
kill_rank1_after_checkpoint $! "$OUT/multi_elastic"
wait
grep -E "starts from the beginning|resumed at iteration|error" "$OUT/elastic.txt" | head -n 5
compare "$OUT/multi_a" "$OUT/multi_elastic"

echo "== 4. SyncBatchNorm: two processes against one on the concatenated batch =="
cat > "$OUT/syncbn.py" <<'PY'
import sys, torch
from torch import nn
from torchvat.train import Trainer
from torchvat.train.distributed import destroy_distributed
sync = sys.argv[1] == "sync"
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))
g = torch.Generator().manual_seed(0)
x = torch.randn(512, 2, generator=g); y = (x[:, 0] * x[:, 1] > 0).long()
world = int(__import__("os").environ.get("WORLD_SIZE", 1))
t = Trainer(model(), x_labeled=x[:64], y_labeled=y[:64], x_unlabeled=x, method="supervised", device="cuda",
            batch_size=32 // world, iterations=20, eval_every=20, progress=False, sync_batchnorm=sync)
t.fit()
torch.save({k: v.cpu() for k, v in t.model.state_dict().items()}, f"{sys.argv[2]}/syncbn_{sys.argv[1]}_{t.rank}.pt")
destroy_distributed(wait=True)
PY
timeout 90 torchrun --standalone --nproc_per_node=2 "$OUT/syncbn.py" sync "$OUT" 2>&1 | tail -n 3
timeout 60 python "$OUT/syncbn.py" one "$OUT" 2>&1 | tail -n 3
python - "$OUT" <<'PY'
import sys, torch
d = sys.argv[1]
r0, r1, one = (torch.load(f"{d}/syncbn_{n}.pt") for n in ("sync_0", "sync_1", "one_0"))
for k in ("1.running_mean", "1.running_var"):
    print(k, "ranks equal:", torch.equal(r0[k], r1[k]), "| max |sync - one process|:", (r0[k] - one[k]).abs().max().item())
PY

echo "== 5. --dist-timeout 20 under NCCL: a SIGSTOPped worker, no torchrun agent =="
PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
for r in 0 1; do
  RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT timeout 200 python "${TRAIN[@]}" \
    --iters 100000 --dist-timeout 20 --out "$OUT/multi_stop" > "$OUT/stop_$r.txt" 2>&1 &
  eval "P$r=\$!"
done
while [ ! -f "$OUT/multi_stop/last.pt" ]; do sleep 0.1; done
kill -STOP "$P1"; START=$(date +%s)
wait "$P0"; echo "rank 0 exited with $? after $(( $(date +%s) - START )) s"
kill -CONT "$P1"; kill -9 "$P1" 2>/dev/null
grep -E "stopped answering|waited more than|Watchdog|timeout" "$OUT/stop_0.txt" | head -n 4
echo "== done =="
exec >&- 2>&-  # let tee see the end of its input and flush the log
wait "$TEE"
