"""Presets: ready tasks that are a family with other defaults, as data.

Each names its family and the keys it fills when a config leaves them empty; the family's own DEFAULTS fill
the rest. They keep the reference experiments' settings, so configs/ give the numbers they gave before the
families existed (the plain template there: BENCHMARKS.md and README measure it against the chat template).
"""

# loralab.config reads this from the file's source (config/registries.py): keep it a literal
PRESETS = {
    "rotten_tomatoes": {
        "family": "classification",
        "dataset": "rotten_tomatoes",
        "template": "Review: {text}\nSentiment:",
        "label_words": ["negative", "positive"],
        "max_new_tokens": 3,
        "chat_template": "none",
    },
    "code_qa": {
        "family": "instruction",
        "dataset": "stdlib_docstrings",
        "template": "### Instruction:\n{text}\n### Python code:\n",
        "max_new_tokens": 256,
        "metrics": ["bleu", "bleu_batched16", "code_token_f1"],
        "chat_template": "none",
    },
    "cnn_dailymail": {"family": "summarization", "dataset": "cnn_dailymail"},
    "xsum": {"family": "summarization", "dataset": "xsum"},
}
