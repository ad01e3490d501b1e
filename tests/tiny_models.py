"""Tiny random-weight models of the real transformers classes, for the architectures without offline weights."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertLMHeadModel,
    BertModel,
    EncoderDecoderModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

VOCAB = 96


def gpt2() -> torch.nn.Module:
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
        )
    )


def gpt_neo() -> torch.nn.Module:
    return GPTNeoForCausalLM(
        GPTNeoConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            attention_types=[[["global", "local"], 1]],
            max_position_embeddings=64,
            bos_token_id=0,
            eos_token_id=0,
        )
    )


def llama() -> torch.nn.Module:
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            max_position_embeddings=64,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )


def gemma3() -> torch.nn.Module:
    return Gemma3ForCausalLM(
        Gemma3TextConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=64,
            sliding_window=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )


def t5() -> torch.nn.Module:
    return T5ForConditionalGeneration(
        T5Config(
            vocab_size=VOCAB,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )


def bert() -> torch.nn.Module:
    return BertModel(
        BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )


def _bert_config(vocab_size: int = VOCAB, **extra) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=128, **extra)  # fmt: skip


def bert2bert(decoder_vocab: int = VOCAB) -> torch.nn.Module:
    """transformers' EncoderDecoderModel as minilm-l6-seq2seq is built: a BERT encoder, a BERT decoder with
    cross-attention and an LM head tied to its own embedding; `decoder_vocab` rows in the decoder."""
    decoder = BertLMHeadModel(_bert_config(decoder_vocab, is_decoder=True, add_cross_attention=True))
    model = EncoderDecoderModel(encoder=BertModel(_bert_config()), decoder=decoder)
    model.config.decoder_start_token_id, model.config.pad_token_id = 0, 0
    model.generation_config.decoder_start_token_id, model.generation_config.pad_token_id = 0, 0
    return model


FACTORIES = {"gpt2": gpt2, "gpt_neo": gpt_neo, "llama": llama, "gemma3": gemma3, "t5": t5, "bert": bert}
# Not in FACTORIES, which tests of every architecture iterate: its encoder's pooler is never used, so it gets no
# gradient (and the tiny_models.run output is the decoder's).
COMPOSITES = {"bert2bert": bert2bert}


def make(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return {**FACTORIES, **COMPOSITES}[name]().eval()


def run(model: torch.nn.Module, seed: int = 1, grad: bool = False) -> torch.Tensor:
    """A forward pass on fixed random tokens; returns the main output (BERT: hidden states and pooler)."""
    with torch.set_grad_enabled(grad):
        return _run(model, seed)


def _run(model: torch.nn.Module, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (2, 7), generator=gen)
    if getattr(model.config, "is_encoder_decoder", False):
        return model(input_ids=ids, decoder_input_ids=ids[:, :5]).logits
    out = model(input_ids=ids)
    if hasattr(out, "logits"):
        return out.logits
    return torch.cat([out.last_hidden_state, out.pooler_output[:, None]], dim=1)
