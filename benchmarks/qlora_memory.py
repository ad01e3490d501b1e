"""Bytes of QLoRA's 4-bit base weights against the same weights in fp32 (target P6: <= 0.16 x).

    python benchmarks/qlora_memory.py

Bundled SmolLM2-135M-Instruct, LoRA r=8 on all linear layers, every wrapped base weight in NF4 (blocks of 64,
with and without double quantization of the block scales). The bytes are counted from the tensors that hold
the quantized weights (codes and scales).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    from loralab.lora import LoRAConfig, apply_lora
    from loralab.methods.qlora import quantization_report, quantize_base

    print(f"# {common.machine()}")
    print("| double quant | quantized layers | weights | NF4 bytes | fp32 bytes | ratio |")
    print("|---|---|---|---|---|---|")
    for double_quant in (True, False):
        model, _ = common.base_model()
        apply_lora(model, LoRAConfig(r=8, alpha=16.0, target_modules="all-linear"))
        quantize_base(model, double_quant)
        report = quantization_report(model)
        print(f"| {double_quant} | {report['quantized_layers']} | {report['quantized_weights']:,} | "
              f"{report['quantized_bytes']:,} | {report['fp32_bytes']:,} | {report['ratio_to_fp32']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
