"""How far each base precision's products land from fp32 on SmolLM2-135M's real activations (issue 18).

    python benchmarks/precision_error.py

Runs the bundled model on 16 Rotten Tomatoes reviews and, for every linear layer of the 30 blocks, compares
y = x·Wᵀ in fp32 with the same product computed as each precision computes it: relative error ‖ŷ − y‖ / ‖y‖,
averaged (and the worst) per kind of layer. "int8 plain" is int8 without the Hadamard rotation
(loralab.precision.int8), to show what the rotation buys. Then the gradient of a LoRA adapter (r 8 on q, k, v,
o; B drawn small so that A gets gradients) through the whole model in each precision against fp32: the cosine
of the flattened gradients and the loss, and once more with the LM head in int8 (which loralab never does).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from loralab.lora import LoRAConfig, apply_lora  # noqa: E402
from loralab.lora.inject import all_lora_layers  # noqa: E402
from loralab.precision import convert_base  # noqa: E402
from loralab.precision.bf16 import Bf16Linear  # noqa: E402
from loralab.precision.int8 import Int8Linear, quantize_rows  # noqa: E402

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def reviews(tokenizer, n: int = 16):
    data = Path(os.environ.get("LORALAB_DATA_DIR", "../shared/data")) / "rotten_tomatoes" / "train.jsonl"
    texts = [json.loads(line)["text"] for line in data.read_text().splitlines()[:n]]
    return tokenizer(texts, return_tensors="pt", padding=True)


def plain_int8(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    q_x, s_x = quantize_rows(x)
    q_w, s_w = quantize_rows(weight)
    return (q_x.float() * s_x) @ (q_w.float() * s_w).T


def layer_errors(model, batch) -> dict[str, dict[str, list[float]]]:
    errors = {kind: {"bf16": [], "int8": [], "int8 plain": []} for kind in KINDS}

    def hook(kind):
        def measure(module, inputs, output):
            x = inputs[0].reshape(-1, inputs[0].shape[-1])
            exact = x.double() @ module.weight.double().T
            for name, y in (
                ("bf16", Bf16Linear(module)(x)),
                ("int8", Int8Linear(module)(x)),
                ("int8 plain", plain_int8(x, module.weight)),
            ):
                errors[kind][name].append(((y.double() - exact).norm() / exact.norm()).item())

        return measure

    handles = [
        module.register_forward_hook(hook(name.rsplit(".", 1)[-1]))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in KINDS
    ]
    with torch.no_grad():
        model(**batch)
    for handle in handles:
        handle.remove()
    return errors


def lora_gradients(model, batch):
    model.zero_grad()
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = model(**batch, labels=labels).loss
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    return loss.item(), grads


def main() -> None:
    base, tokenizer = common.base_model()
    batch = reviews(tokenizer)
    print(f"# {common.machine()}")
    print("| layer | bf16 mean / worst | int8 mean / worst | int8 without rotation mean / worst |")
    print("|---|---|---|---|")
    for kind, by_precision in layer_errors(base, batch).items():
        cells = [f"{100 * sum(v) / len(v):.2f}% / {100 * max(v):.2f}%" for v in by_precision.values()]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    lora = apply_lora(base, LoRAConfig(r=8, alpha=16, target_modules=common.TARGETS))
    torch.manual_seed(0)
    for layer in all_lora_layers(lora).values():
        torch.nn.init.normal_(layer.adapter.lora_B, std=0.01)
    lora.train()
    loss32, grads32 = lora_gradients(lora, batch)
    print(
        f"\nLoRA gradients through the whole model (16 reviews, every token a target); fp32 loss {loss32:.4f}"
    )
    print("| precision | LM head | loss | cosine to fp32's gradients |")
    print("|---|---|---|---|")
    for precision, int8_head in (("bf16", False), ("int8", False), ("int8", True)):
        model = copy.deepcopy(lora)
        _, _, head = convert_base(model, precision, torch.device("cpu"))
        if int8_head:  # what loralab never does (precision/convert.py head_precision): shows why
            model.lm_head = Int8Linear(lora.lm_head)
            head = "int8"
        loss, grads = lora_gradients(model, batch)
        cosine = F.cosine_similarity(grads, grads32, dim=0).item()
        print(f"| {precision} | {head or 'fp32'} | {loss:.4f} | {cosine:.4f} |")


if __name__ == "__main__":
    main()
