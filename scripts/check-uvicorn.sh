#!/usr/bin/env bash
# The connection check against the stack vLLM's server runs on: FastAPI + uvicorn
# (scripts/reference/uvicorn_server.py, in a venv of its own), 201 requests of 8 tokens at
# concurrency 4 with one warm-up. uvicorn ends each streamed body in a write of its own after
# `[DONE]`; a client that stops reading at `[DONE]` loses the connection and opens one per
# request. Passes when the server saw at most concurrency + 2 connections and every request
# succeeded; prints the server's and our mean TTFT.
#
#   scripts/check-uvicorn.sh [PATH_TO_sagellm-benchmark]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/release/sagellm-benchmark}"
venv="${SAGELLM_CACHE_DIR:-$HOME/.cache/sagellm-bench}/uvicorn-venv"
port="${SAGELLM_UVICORN_PORT:-8091}"
concurrency=4

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "fastapi>=0.110" "uvicorn>=0.29"
fi
"$venv/bin/python" -c 'import fastapi, uvicorn; print("fastapi", fastapi.__version__, "uvicorn", uvicorn.__version__)'

"$venv/bin/python" scripts/reference/uvicorn_server.py "$port" &
pid=$!
work="$(mktemp -d)"
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v1/models')" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || exit 1
    sleep 0.1
done

cat >"$work/conn.toml" <<TOML
[workloads.conn]
prompt_tokens = 16
output_tokens = 8
num_requests = 200
concurrency = $concurrency
warmup_requests = 1
TOML
"$bin" run --backend openai --base-url "http://127.0.0.1:$port" --model uvicorn-model \
    --no-metrics --quiet --workload conn --config "$work/conn.toml" --output "$work/out"

python3 - "$work/out" "$port" "$concurrency" <<'PY'
import json, sys, urllib.request
out, port, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = json.load(open(f"{out}/conn_metrics.json"))
stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats"))
print(f"uvicorn saw {stats['connections']} connections for {stats['requests']} requests; "
      f"ours: connections_opened {m['connections_opened']}, retried {m['retried_requests']}, "
      f"{m['successful_requests']}/{m['total_requests']} ok; mean TTFT ours {m['avg_ttft_ms']:.2f} ms, "
      f"server's {stats['mean_ttft_ms']:.2f} ms")
ok = stats["connections"] <= concurrency + 2 and m["successful_requests"] == m["total_requests"]
sys.exit(0 if ok else 1)
PY
