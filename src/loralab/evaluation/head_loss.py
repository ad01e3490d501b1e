"""Summed cross-entropy of an LM head over selected positions, in chunks: no full logits tensor ever exists.

    loss = Σ_i  logsumexp(h_i·Wᵀ + b) − (h_i·Wᵀ + b)[t_i]

A vocabulary of 49k and 1,000 target positions make a 200 MB logits tensor in fp32, which a plain
`F.cross_entropy(lm_head(h))` keeps (with its log-softmax) until backward. Here the logits of `chunk_rows`
positions at a time are made, turned into the loss and, when gradients are wanted, straight into the gradients
of h (and of W and b when they train): ∂loss/∂logits = softmax − onehot, so
    ∂h = (softmax − onehot)·W,   ∂W = (softmax − onehot)ᵀ·h,   ∂b = Σ (softmax − onehot)
and only those gradients are kept for backward. The same flops, a fraction of the memory traffic.

A frozen head stored in a low-precision format (loralab.precision: int8, bf16) comes as `frozen`, whose
`product(h)` = h·Wᵀ and `input_grad(g)` = g·W replace the two products with W.
"""

from __future__ import annotations

import torch

CHUNK_BYTES = 96 * 2**20  # logits of one chunk, fp32 (512 positions of a 49k vocabulary: big enough for
# the matrix products to run at full speed, a quarter of the logits of a batch of 8 × 256)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows, frozen):  # noqa: D102 - see the module
        want = ctx.needs_input_grad
        grad_h = torch.empty_like(hidden) if want[0] else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if want[1] and frozen is None else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and want[2] else None
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start : start + chunk_rows]
            t = targets[start : start + chunk_rows]
            logits = (h @ weight.T if frozen is None else frozen.product(h)).float()
            if bias is not None:
                logits += bias.float()
            lse = torch.logsumexp(logits, dim=1)
            rows = torch.arange(len(t), device=t.device)
            total += (lse - logits[rows, t]).sum()
            if grad_h is None and grad_w is None and grad_b is None:
                continue
            dlogits = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            dlogits[rows, t] -= 1
            if grad_b is not None:
                grad_b += dlogits.sum(dim=0)
            dlogits = dlogits.to(hidden.dtype)
            if grad_h is not None and frozen is not None:
                grad_h[start : start + chunk_rows] = frozen.input_grad(dlogits)
            elif grad_h is not None:
                torch.mm(dlogits, weight, out=grad_h[start : start + chunk_rows])
            if grad_w is not None:
                grad_w.addmm_(dlogits.T.float(), h.float())
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.present = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (
            hidden.dtype,
            weight.dtype if frozen is None else None,
            bias.dtype if bias is not None else None,
        )
        return total

    @staticmethod
    def backward(ctx, grad_loss):  # noqa: D102
        saved = iter(ctx.saved_tensors)
        grads = [
            (next(saved) * grad_loss).to(dtype) if present else None
            for present, dtype in zip(ctx.present, ctx.dtypes, strict=True)
        ]
        return grads[0], grads[1], grads[2], None, None, None


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_rows: int = 0,
    frozen: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Σ cross-entropy(hidden·weightᵀ + bias, targets) over the rows of `hidden` (n × d; weight V × d);
    `chunk_rows` positions at a time (0 = as many as fit in CHUNK_BYTES of logits). A frozen low-precision
    head comes as `frozen` (module docstring) with weight None."""
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0 + (0.0 if weight is None else weight.sum() * 0.0)
    vocabulary = weight.shape[0] if frozen is None else frozen.out_features
    rows = chunk_rows or max(1, CHUNK_BYTES // (4 * vocabulary))
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, rows, frozen)
