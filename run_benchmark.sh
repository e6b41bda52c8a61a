#!/usr/bin/env bash
# One-click Year-1 benchmark: runs short_input, long_input and stress_test, writes the JSON
# files and the summary, prints the table, and writes a markdown report.
#
#   ./run_benchmark.sh                       # mock backend, results in ./benchmark_results
#   BACKEND=cpu MODEL=gpt2 ./run_benchmark.sh
#   OUTPUT=./my_results ./run_benchmark.sh
set -euo pipefail
cd "$(dirname "$0")"

BACKEND="${BACKEND:-mock}"
OUTPUT="${OUTPUT:-./benchmark_results}"
REPORT="${REPORT:-REPORT.md}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "Error: cargo not found. Install Rust from https://rustup.rs and run this script again." >&2
    exit 1
fi

echo "==> Building sagellm-benchmark (release)"
cargo build --release --quiet
# Through cargo, not ./target/release/...: the binary is wherever CARGO_TARGET_DIR (or a
# config's build.target-dir) puts it, and cargo run never starts a stale one.
bin() {
    cargo run --release --quiet --bin sagellm-benchmark -- "$@"
}

args=(run --workload year1 --backend "$BACKEND" --output "$OUTPUT")
if [[ -n "${MODEL:-}" ]]; then
    args+=(--model "$MODEL")
fi
echo "==> Running the Year-1 workloads on the $BACKEND backend"
bin "${args[@]}"

echo "==> Writing $REPORT"
bin report --input "$OUTPUT/benchmark_summary.json" --format markdown > "$REPORT"
echo "Done: JSON files in $OUTPUT, markdown report in $REPORT"
