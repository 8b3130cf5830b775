#!/usr/bin/env bash
# Two "nodes" on this machine: two torchrun agents (--nnodes=2, one process each) meet through
# a c10d rendezvous on 127.0.0.1 and pretrain a tiny model with FSDP for a few steps.
# On real machines run the same torchrun line on each, with the first one's address.
#
#   scripts/two_nodes.sh [ddp|fsdp|tp]     (default fsdp; needs .venv, about a minute on a CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-fsdp}"
PORT="${PORT:-29477}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

mkdir -p "$WORK/corpus"
for i in 0 1 2; do
  for _ in $(seq 30); do
    printf 'Doc%s Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n' "$i"
  done > "$WORK/corpus/doc$i.txt"
done

node() {  # one agent; both write into the same run directory (a shared filesystem)
  OMP_NUM_THREADS=1 .venv/bin/torchrun --nnodes=2 --nproc_per_node=1 \
    --rdzv-backend=c10d --rdzv-endpoint="127.0.0.1:$PORT" --rdzv-id=lmforge-two-nodes \
    -m lmforge pretrain shakespeare-char --no-progress \
    --data.corpus="$WORK/corpus" --data.valid_fraction=0.34 \
    --model.n_layer=2 --model.n_head=2 --model.n_embd=32 --model.block_size=16 \
    --train.batch_size=4 --train.max_steps=10 --train.warmup_steps=2 --train.eval_interval=5 \
    --train.eval_batches=2 --train.log_interval=1 --train.precision=fp32 --train.device=cpu \
    --train.max_minutes=null --train.parallel="$MODE" \
    --run.out_dir="$WORK/runs" --run.name=two-nodes --run.sample_tokens=20
}
node > "$WORK/node0.log" 2>&1 &
first=$!
node > "$WORK/node1.log" 2>&1 &
second=$!
status=0
wait "$first" || status=$?
wait "$second" || status=$?
echo "--- first agent (rank 0 if the rendezvous made it so) ---"; grep -v '^W[0-9]' "$WORK/node0.log" | tail -n 8 || true
echo "--- second agent ---"; grep -v '^W[0-9]' "$WORK/node1.log" | tail -n 4 || true
echo "--- $WORK/runs/two-nodes/results.json ---"
cat "$WORK/runs/two-nodes/results.json" 2>/dev/null || echo "(missing)"
echo "train log lines: $(grep -c '"event": "train"' "$WORK/runs/two-nodes/metrics.jsonl" || true)"
echo "exit status: $status"
exit "$status"
