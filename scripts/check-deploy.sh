#!/usr/bin/env bash
# Checks the recipes in deploy/: the Kubernetes manifests against the Kubernetes API's schemas
# (kubernetes-validate from PyPI, which carries the schemas, so no cluster is needed; strict:
# an unknown field is an error), and the Slurm script's shell syntax.
#
#   scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SAGELLM_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sagellm-bench/deploy-venv}"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'kubernetes-validate==1.37.0'
fi
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes/*.yaml
bash -n deploy/slurm/shards.sbatch
echo "deploy/: manifests and Slurm script check out"
