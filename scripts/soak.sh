#!/usr/bin/env bash
# Long runs and their peak memory (docs/PERFORMANCE.md, "Long runs"). A measurement, not a test.
#
#   scripts/soak.sh mock   [N...]   one workload of N requests on the mock backend
#                                   (64 prompt / 32 output tokens, 64 in flight); default
#                                   5000 20000 40000 100000
#   scripts/soak.sh server [N...]   N requests against the scripted test server on 127.0.0.1
#                                   (64 output tokens, 1 a chunk, TTFT 10 ms, 1 ms apart,
#                                   64 in flight), which this script starts and stops;
#                                   default 5000 20000
#
# For each N it prints the wall time, the peak resident memory of the whole
# `sagellm-benchmark run` process (GNU time's %M) and the counts from benchmark_summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-mock}
shift || true
target=${CARGO_TARGET_DIR:-target}
# The whole workspace, as the README's test command builds it: a single package (`-p`, or the
# root alone) unifies features differently and rebuilds candle and every other dependency.
cargo build --release --quiet --workspace
bin="$target/release/sagellm-benchmark"
work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

case "$mode" in
mock)
    sizes=("${@:-5000 20000 40000 100000}")
    output_tokens=32
    backend=(--backend mock)
    ;;
server)
    sizes=("${@:-5000 20000}")
    output_tokens=64
    "$target/release/sagellm-test-server" --port 0 --ttft-ms 10 --itl-ms 1 --tokens-per-chunk 1 \
        > "$work/server.out" &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q listening "$work/server.out" 2>/dev/null && break
        sleep 0.1
    done
    url=$(sed -n 's/^listening on //p' "$work/server.out")
    [ -n "$url" ] || { echo "the test server did not start" >&2; exit 1; }
    backend=(--backend openai --base-url "$url" --no-metrics)
    ;;
*)
    echo "usage: scripts/soak.sh mock|server [N...]" >&2
    exit 2
    ;;
esac

printf '%-8s %9s %10s %11s %7s %14s\n' requests "wall (s)" "max RSS" successful failed \
    "output tokens"
for n in ${sizes[*]}; do
    printf '[workloads.soak]\nprompt_tokens = 64\noutput_tokens = %d\nnum_requests = %d\nconcurrency = 64\nwarmup_requests = 0\n' \
        "$output_tokens" "$n" > "$work/soak.toml"
    out="$work/out-$n"
    /usr/bin/time -f "%e %M" -o "$work/time" \
        "$bin" run --workload soak --config "$work/soak.toml" "${backend[@]}" -q -o "$out"
    read -r wall rss_kb < "$work/time"
    m="$out/soak_metrics.json"
    printf '%-8s %9s %7.1f MB %11s %7s %14s\n' "$n" "$wall" "$(echo "$rss_kb / 1024" | bc -l)" \
        "$(jq .successful_requests "$m")" "$(jq .failed_requests "$m")" \
        "$(jq .total_output_tokens "$m")"
    lines=$(wc -l < "$out/soak_requests.jsonl")
    [ "$lines" -eq "$n" ] || echo "  soak_requests.jsonl has $lines lines, not $n" >&2
    rm -rf "$out"
done
