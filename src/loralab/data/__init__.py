"""Data: where a dataset's rows come from and how they become token ids. tables.py reads table files;
sources.py is the one fallback chain (explicit path -> $LORALAB_DATA_DIR -> the Hugging Face hub -> an offline
stand-in) that returns rows with their Provenance; sentiment_sources.py, code_sources.py and
summarization_sources.py say only what differs per dataset, and builtin.py names them; datasets.py loads any
other dataset the user names (a hub id, a file or a folder; local_data.py reads the local layouts); formats.py
reads instruction rows (prompt/completion, alpaca, messages, ShareGPT) as conversations; splits.py makes
deterministic splits; chat.py renders prompts (a plain template or a chat template) and marks the trained
tokens; encoding.py tokenizes, masks, collates and packs; stats.py counts; code_vocab/ adds a Python
vocabulary.
May import errors, files, hub, naming, lora and models (a tokenizer for stats); nothing from evaluation,
tasks, methods, training, reporting or cli.
"""
