#!/usr/bin/env bash
# The slow test set (-m slow): README figures re-measured with margins, the memory soak,
# full-size architectures (frozen vs eager, torchvision weights, bf16 training to 98%).
# Run from the repository root after `pip install ".[test]"`; CI leaves it out (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
python -m pytest -q -m slow "$@"
echo "slow tests took $(( $(date +%s) - start )) s"
