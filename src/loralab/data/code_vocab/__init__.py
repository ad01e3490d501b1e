"""The code vocabulary: one token per Python keyword and builtin, and stand-ins for characters a tokenizer
loses, so that a prose tokenizer (or T5's, which cannot even write a newline) can read and write Python.
text.py owns the vocabulary itself (rewrite/restore of text, code_vocab.json); tokens.py adds its tokens to a
tokenizer and encodes/decodes with them; embeddings.py grows a model's embedding tables for them and loads an
adapter that has them. May import errors, files, naming, lora (adapter files), transformers and torch;
nothing above data.
"""
