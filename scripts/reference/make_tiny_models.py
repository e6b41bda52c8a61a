#!/usr/bin/env python3
"""Writes tiny random-weight GPT-2 and OPT models and their reference logits, computed by
Hugging Face transformers (PyTorch, float32), for the cpu backend's Rust tests.

Output, per architecture, in sagellm-bench/tests/data/tiny-<arch>/:
  config.json, model.safetensors   (save_pretrained, safe_serialization)
  tokenizer.json                   (a word-level tokenizer built with the tokenizers library)
  reference.json                   {"input_ids": [...], "logits": [[...] per position]}

Run:  python scripts/reference/make_tiny_models.py
Needs: torch, transformers, tokenizers (pip install torch transformers). Deterministic: fixed
seeds; rerunning gives the same files on the same library versions.
"""
import json
import os
import sys

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, decoders

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "sagellm-bench", "tests", "data")

# The synthetic workload's words and a few more, so workload prompts tokenize to real ids.
WORDS = (
    "the model server token cache batch latency request stream memory prefix decode prefill "
    "engine queue block layer weight tensor attention sequence output input prompt bench mark "
    "a of to and in is it that for on with as was at by be this are from or have an not but"
).split()
SPECIALS = ["<unk>", "<s>", "</s>"]


def word_tokenizer():
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return tok, len(vocab)


def save(name, model, tokenizer, input_ids):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    with torch.no_grad():
        logits = model(torch.tensor([input_ids])).logits[0]
    reference = {
        "produced_by": f"transformers {transformers.__version__}, torch {torch.__version__}, float32",
        "input_ids": input_ids,
        "logits": [[round(float(x), 6) for x in row] for row in logits],
    }
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(reference, f)
    # generation_config.json is not needed by the Rust loader.
    gen = os.path.join(folder, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    print(f"wrote {folder}: logits {tuple(logits.shape)}")


def main():
    tokenizer, vocab = word_tokenizer()
    input_ids = tokenizer.encode("the model server token cache batch latency request stream memory prefix decode").ids
    assert len(input_ids) == 12, input_ids

    torch.manual_seed(1)
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=vocab, n_positions=64, n_embd=64, n_layer=2, n_head=4,
            bos_token_id=1, eos_token_id=2,
        )
    ).eval()

    torch.manual_seed(2)
    opt = transformers.OPTForCausalLM(
        transformers.OPTConfig(
            vocab_size=vocab, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
            num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64,
            do_layer_norm_before=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )
    ).eval()
    # Random init leaves LayerNorms at 1/0 and biases at 0; perturb them so they are tested.
    with torch.no_grad():
        for model in (gpt2, opt):
            for n, p in model.named_parameters():
                if n.endswith("bias") or "norm" in n or "ln_" in n:
                    p.add_(torch.randn_like(p) * 0.1)
    save("tiny-gpt2", gpt2, tokenizer, input_ids)
    save("tiny-opt", opt, tokenizer, input_ids)


if __name__ == "__main__":
    sys.exit(main())
