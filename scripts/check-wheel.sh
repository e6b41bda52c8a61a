#!/usr/bin/env bash
# Builds the Python wheel of the sagellm-benchmark binary with maturin (pyproject.toml,
# `bindings = "bin"`), installs it into a fresh venv without the network, and runs the
# installed command: its version, and the Year-1 short workload on the mock backend.
#
#   scripts/check-wheel.sh [WHEEL_DIR]     # default: <target>/wheels
#
# maturin comes from PyPI into a cached venv. The build is `cargo build --release` of the root
# package, so after the README's main command (`cargo run --release -- ...`) it only packs.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
wheels="${1:-$target/wheels}"
tools="${SAGELLM_WHEEL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sagellm-bench/maturin-venv}"
if [ ! -x "$tools/bin/maturin" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet 'maturin==1.16.0'
fi
rm -rf "$wheels"
"$tools/bin/maturin" build --release --quiet --out "$wheels"
wheel=$(ls "$wheels"/sagellm_bench-*.whl)
echo "built $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
# --no-index: everything the command needs is in the wheel.
"$scratch/venv/bin/pip" install --quiet --no-index "$wheel"
installed="$scratch/venv/bin/sagellm-benchmark"
"$installed" --version
(cd "$scratch" && "$installed" run --workload short --backend mock --quiet --output out)
python3 - "$scratch/out/short_input_metrics.json" <<'PY'
import json, sys
metrics = json.load(open(sys.argv[1]))
assert metrics["successful_requests"] == 5, metrics["successful_requests"]
assert metrics["failed_requests"] == 0, metrics["failed_requests"]
PY
echo "the wheel installs into a fresh venv and its sagellm-benchmark runs"
