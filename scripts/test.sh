#!/usr/bin/env bash
# Run the whole test suite (slow end-to-end tests included). Data comes from ../shared/data unless
# LORALAB_DATA_DIR says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
export LORALAB_DATA_DIR="${LORALAB_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q "$@"
