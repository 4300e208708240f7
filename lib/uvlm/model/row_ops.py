"""Row gathers whose backward needs no atomics.

``index_select``'s generic backward is ``index_add`` into zeros: atomic adds, which for
bf16 are emulated and slow. Our indices never repeat (they select text rows, image rows,
or permute all rows), so the gradient is a plain ``index_copy`` (a subset) or an
``index_select`` with the inverse permutation (a permutation).
"""
from __future__ import annotations

import torch


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, idx):
        ctx.save_for_backward(idx)
        ctx.n_rows = x.shape[0]
        return x.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        out = grad.new_zeros((ctx.n_rows, *grad.shape[1:]))
        return out.index_copy_(0, idx, grad), None


class _PermuteRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, perm, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[idx] along dim 0, for indices without repeats."""
    return _GatherRows.apply(x, idx) if x.requires_grad else x.index_select(0, idx)


def permute_rows(x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """x[perm] along dim 0, where ``perm`` is a permutation and ``inverse`` its inverse."""
    return _PermuteRows.apply(x, perm, inverse) if x.requires_grad else x.index_select(0, perm)
