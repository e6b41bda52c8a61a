#!/usr/bin/env bash
# Rewrites examples/sample_output/ from a Year-1 mock run. The mock is deterministic, so the
# files change only when the code's behaviour does; tests/cli.rs fails until they are
# regenerated and the diff reviewed.
set -euo pipefail
cd "$(dirname "$0")/.."
# The workspace, as the tests build it (the root package alone would rebuild candle).
cargo build --release --quiet --workspace
bin="${CARGO_TARGET_DIR:-target}/release/sagellm-benchmark"
out=examples/sample_output
rm -rf "$out"
# The summary records the command; name the binary as the default target folder does, whatever
# CARGO_TARGET_DIR is, so the committed files do not carry a local path.
(exec -a ./target/release/sagellm-benchmark "$bin" run --workload year1 --backend mock --quiet --output "$out")
"$bin" report --input "$out/benchmark_summary.json" --format markdown > "$out/REPORT.md"
echo "wrote $out"
