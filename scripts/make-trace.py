#!/usr/bin/env python3
"""Writes examples/traces/mooncake_small.jsonl: a small trace in the Mooncake format, generated.

It is not a recording of anybody's traffic. It imitates the shape of the published Mooncake
traces: requests arrive as a Poisson process (2 per second for 60 s), prompts are made of
512-token blocks named by hash ids, and most requests share leading blocks with earlier ones,
the way chat sessions and shared system prompts do:

- 4 "applications", each with a 2-block system prompt of its own (ids 0-7);
- a request either starts a new conversation of an application (system blocks + 1-3 new
  blocks) or continues an earlier conversation (its blocks + 1-2 new blocks), 60 % of the time;
- the last block is partial: input_length = 512 * blocks - a random 0..511;
- output_length is 16-256 tokens.

Deterministic (seeded), so the file in the repository can be re-made exactly:

    python3 scripts/make-trace.py > examples/traces/mooncake_small.jsonl
"""

import json
import random

BLOCK = 512


def main():
    rng = random.Random(20261201)
    next_id = 8  # ids 0-7 are the applications' system prompts
    conversations = []  # the hash ids each conversation has reached
    t_ms = 0.0
    for _ in range(120):
        t_ms += rng.expovariate(2.0) * 1000.0
        if conversations and rng.random() < 0.6:
            base = rng.choice(conversations)
        else:
            app = rng.randrange(4)
            base = [2 * app, 2 * app + 1]
        new = rng.randint(1, 2) if len(base) > 2 else rng.randint(1, 3)
        ids = base + list(range(next_id, next_id + new))
        next_id += new
        conversations.append(ids)
        line = {
            "timestamp": int(t_ms),
            "input_length": BLOCK * len(ids) - rng.randrange(BLOCK),
            "output_length": rng.randint(16, 256),
            "hash_ids": ids,
        }
        print(json.dumps(line))


if __name__ == "__main__":
    main()
