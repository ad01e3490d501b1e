"""Soft prompt tuning (Lester et al. 2021): `n_virtual_tokens` trainable embeddings in front of every input.

The model stays frozen; only the prompt (n × hidden size numbers) trains. It is initialised from the
embeddings of `prompt_init_text` (repeated or cut to n tokens) or, without a text, from the embeddings of n
vocabulary tokens drawn at random (the paper found both better than random vectors). For an encoder-decoder
the prompt goes in front of the encoder's input.

Saved in the peft library's prompt-tuning layout: adapter_config.json (peft_type PROMPT_TUNING) and
adapter_model.safetensors holding `prompt_embeddings` (n × hidden size).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from loralab.config import RunConfig
from loralab.errors import UserError
from loralab.evaluation.loss import accepts
from loralab.files import read_json_object, read_tensors, write_atomically, write_text_atomically
from loralab.methods.base import Method

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


class PromptTuned(nn.Module):
    """A frozen model with a trainable prompt prepended to the embedded input of every forward and generate."""

    def __init__(self, model: nn.Module, prompt: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.prompt = nn.Parameter(prompt.detach().clone())

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # config, generation_config, prepare_decoder_input_ids_from_labels, ...
            return getattr(self._modules["model"], name)

    @property
    def n_virtual_tokens(self) -> int:
        return self.prompt.shape[0]

    def _with_prompt(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> dict:
        embeds = self.model.get_input_embeddings()(input_ids)
        batch, n = input_ids.shape[0], self.n_virtual_tokens
        prompt = self.prompt.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ones = attention_mask.new_ones(batch, n)
        return {
            "inputs_embeds": torch.cat([prompt, embeds], 1),
            "attention_mask": torch.cat([ones, attention_mask], 1),
        }

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ):
        """The wrapped model's output for the same positions as without the prompt (its logits are cut off)."""
        inputs = self._with_prompt(input_ids, attention_mask)
        if getattr(self.model.config, "is_encoder_decoder", False):
            return self.model(**inputs, **kwargs)  # the decoder's logits: nothing to cut
        n = self.n_virtual_tokens
        if position_ids is not None and accepts(type(self.model), "position_ids"):
            prompt_positions = torch.arange(n, device=position_ids.device).expand(position_ids.shape[0], -1)
            inputs["position_ids"] = torch.cat([prompt_positions, position_ids + n], 1)
        if logits_to_keep and accepts(type(self.model), "logits_to_keep"):
            return self.model(**inputs, logits_to_keep=logits_to_keep, **kwargs)
        output = self.model(**inputs, **kwargs)
        output.logits = output.logits[:, n:]
        return output

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **options):
        """Like the wrapped model's generate; a causal LM's output starts with `input_ids` as usual."""
        generated = self.model.generate(**self._with_prompt(input_ids, attention_mask), **options)
        if getattr(self.model.config, "is_encoder_decoder", False):
            return generated
        return torch.cat([input_ids, generated], 1)  # from embeddings, generate returns the new tokens only


def initial_prompt(model: nn.Module, n: int, init_text: str, tokenizer, seed: int) -> torch.Tensor:
    embedding = model.get_input_embeddings()
    if init_text:
        ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
        if not ids or not init_text.strip():
            raise UserError("prompt_init_text has no words; give a few words or leave it empty")
        ids = (ids * (n // len(ids) + 1))[:n]
    else:
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, embedding.num_embeddings, (n,), generator=generator).tolist()
    with torch.no_grad():
        return embedding(torch.tensor(ids, device=embedding.weight.device)).float()


def prepare(
    model: nn.Module, config: RunConfig, extra_modules: tuple[str, ...] = (), tokenizer=None
) -> nn.Module:
    if extra_modules:
        raise UserError(
            "prompt_tuning keeps the model frozen; it cannot train the code vocabulary's embeddings "
            "(set code_vocab = false)"
        )
    if type(model).__name__.endswith("ForSequenceClassification"):
        raise UserError(
            "prompt_tuning needs a language model (causal or seq2seq), not a classification head; "
            "use model_kind causal, or another method"
        )
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    prompt = initial_prompt(model, config.n_virtual_tokens, config.prompt_init_text, tokenizer, config.seed)
    return PromptTuned(model, prompt)


def _peft_config(model: PromptTuned, config: RunConfig) -> dict:
    base = model.model
    encoder_decoder = getattr(base.config, "is_encoder_decoder", False)
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": "SEQ_2_SEQ_LM" if encoder_decoder else "CAUSAL_LM",
        "num_virtual_tokens": model.n_virtual_tokens,
        "token_dim": model.prompt.shape[1],
        "num_transformer_submodules": 1,
        "prompt_tuning_init": "TEXT" if config.prompt_init_text else "RANDOM",
        "prompt_tuning_init_text": config.prompt_init_text or None,
        "tokenizer_name_or_path": config.model if config.prompt_init_text else None,
        "base_model_name_or_path": config.model,
        "inference_mode": True,
    }


def save(model: nn.Module, directory: Path, config: RunConfig) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {"prompt_embeddings": model.prompt.detach().cpu().contiguous()}
    write_atomically(directory / WEIGHTS_FILE, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    write_text_atomically(directory / CONFIG_FILE, json.dumps(_peft_config(model, config), indent=2))


def _read_prompt(directory: Path) -> torch.Tensor:
    path = Path(directory) / WEIGHTS_FILE
    meta = read_json_object(
        Path(directory) / CONFIG_FILE, "a prompt-tuning config", "is it a prompt-tuning run?"
    )
    if meta.get("peft_type") != "PROMPT_TUNING" or not path.is_file():
        raise UserError(f"{directory} holds no soft prompt (peft_type {meta.get('peft_type')!r})")
    saved = read_tensors(path, "train the run again (or resume it) to write it anew")
    if "prompt_embeddings" not in saved:
        raise UserError(f"{path} holds no prompt_embeddings tensor; train the run again to write it anew")
    return saved["prompt_embeddings"]


def load(model: nn.Module, directory: Path) -> nn.Module:
    prompt = _read_prompt(directory)
    width = model.get_input_embeddings().embedding_dim
    if prompt.shape[1] != width:
        raise UserError(
            f"the prompt in {directory} is {prompt.shape[1]} wide, this model's embeddings {width}; "
            "load it onto the model it was trained with"
        )
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return PromptTuned(model, prompt)


def restore(model: nn.Module, directory: Path) -> nn.Module:
    with torch.no_grad():
        model.prompt.copy_(_read_prompt(directory))
    return model


METHOD = Method("prompt_tuning", prepare, save, load, restore)
