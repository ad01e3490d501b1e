"""Evaluation: scoring a model on examples. Validation loss over the target tokens (loss.py, and head_loss.py's
chunked LM-head cross-entropy that never builds the full logits), predictions by generation or by a
classification head (predict.py), label words ranked by their likelihood under a causal LM (likelihood.py),
text and classification metrics (metrics.py), the confusion-matrix plot (plots.py), and code benchmarks scored
by running the generated code (code_eval.py) inside the sandbox (sandbox/). May import errors, files, hub,
config, lora, models and data; nothing from tasks, methods, training or above.
"""
