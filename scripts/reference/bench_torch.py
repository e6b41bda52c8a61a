#!/usr/bin/env python3
"""PyTorch + transformers prefill and decode speed on the same SmolLM2 GGUF (dequantized to
float32 by transformers), one thread, 128-token prompt, 128 output tokens, greedy with a KV cache.
Prints one JSON line. Called by scripts/bench-cpu.sh.

Run:  python scripts/reference/bench_torch.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys
import time

import torch
import transformers

PROMPT_TOKENS = 128
OUTPUT_TOKENS = 128


def run_once(model, prompt):
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(prompt, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        prefill = time.perf_counter() - start
        past = out.past_key_values
        start = time.perf_counter()
        for _ in range(OUTPUT_TOKENS - 1):
            out = model(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        decode = time.perf_counter() - start
    return prefill, decode


def main(path):
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
    folder, name = os.path.split(os.path.abspath(path))
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, torch_dtype=torch.float32
    ).eval()
    words = tok("the model server token cache batch latency request stream", add_special_tokens=False).input_ids
    ids = (words * (PROMPT_TOKENS // len(words) + 1))[:PROMPT_TOKENS]
    prompt = torch.tensor([ids])
    runs = [run_once(model, prompt) for _ in range(4)][1:]
    prefill, decode = min(runs, key=lambda r: r[0] + r[1])
    print(json.dumps({
        "engine": f"pytorch {torch.__version__} + transformers {transformers.__version__}",
        "dtype": "f32",
        "threads": torch.get_num_threads(),
        "prompt_tokens": PROMPT_TOKENS,
        "output_tokens": OUTPUT_TOKENS,
        "prefill_tok_s": PROMPT_TOKENS / prefill,
        "decode_tok_s": (OUTPUT_TOKENS - 1) / decode,
    }))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bench_torch.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf")
    main(sys.argv[1])
