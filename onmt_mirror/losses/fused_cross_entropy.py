"""Summed cross-entropy over the vocabulary, fused into one Triton kernel on CUDA.

Under mixed precision F.cross_entropy casts the (tokens x 20k) fp16 logits to fp32, keeps
the fp32 log-softmax for backward and casts the gradient back to fp16: ~26 bytes of memory
traffic per logit, on four output layers per Mirror step. The kernel reads the fp16 logits
twice (log-sum-exp in fp32, then softmax - one-hot), writes that gradient in fp16 during the
forward and backward only scales it: ~10 bytes per logit, the same arithmetic in the same
precisions. It also returns each row's argmax (accuracy) from the first pass. Anywhere else
(CPU, fp32 logits, no Triton) it is F.cross_entropy.
"""
import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs of torch come without Triton
    triton = None

BLOCK = 4096

if triton is not None:
    @triton.jit
    def _cross_entropy_rows(logits, stride, gold, nll, argmax, grad, V,
                            BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        src = logits + row * stride
        dst = grad + row * V
        cols = tl.arange(0, BLOCK)
        # online log-sum-exp; the first block is peeled so the loop carries tensors
        x = tl.load(src + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        m = tl.max(x, 0)
        best = tl.argmax(x, 0)
        s = tl.sum(tl.exp(x - m), 0)
        for start in range(BLOCK, V, BLOCK):
            x = tl.load(src + start + cols, mask=start + cols < V,
                        other=float("-inf")).to(tl.float32)
            block_max = tl.max(x, 0)
            best = tl.where(block_max > m, tl.argmax(x, 0) + start, best)
            new_m = tl.maximum(m, block_max)
            s = s * tl.exp(m - new_m) + tl.sum(tl.exp(x - new_m), 0)
            m = new_m
        lse = m + tl.log(s)
        target = tl.load(gold + row)
        tl.store(nll + row, lse - tl.load(src + target).to(tl.float32))
        tl.store(argmax + row, best)
        for start in range(0, V, BLOCK):
            x = tl.load(src + start + cols, mask=start + cols < V, other=0.0).to(tl.float32)
            p = tl.exp(x - lse) - tl.where(start + cols == target, 1.0, 0.0)
            tl.store(dst + start + cols, p.to(grad.dtype.element_ty), mask=start + cols < V)


class _FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, gold, weight):
        logits = logits.contiguous()
        N, V = logits.shape
        nll = torch.empty(N, dtype=torch.float32, device=logits.device)
        argmax = torch.empty(N, dtype=torch.int32, device=logits.device)
        grad = torch.empty_like(logits)
        if N:
            _cross_entropy_rows[(N,)](logits, logits.stride(0), gold.contiguous(), nll,
                                      argmax, grad, V, BLOCK=BLOCK, num_warps=8)
        ctx.mark_non_differentiable(argmax)
        if weight is None:
            ctx.save_for_backward(grad)
            return nll.sum(), argmax
        ctx.save_for_backward(grad, weight)
        return (nll * weight).sum(), argmax

    @staticmethod
    def backward(ctx, grad_nll, _):
        grad, *weight = ctx.saved_tensors
        # a same-dtype product takes the vectorised kernel (an fp32 scalar tensor made it
        # a slow casting one, as long as the fused kernel itself); a scale past the fp16
        # range overflows here as it would in F.cross_entropy's fp16 gradient
        if weight:  # (N, 1): the per-row weights of a captured step's capacity padding
            return grad * (grad_nll * weight[0][:, None]).to(grad.dtype), None, None
        return grad * grad_nll.to(grad.dtype), None, None


def fused_available(logits):
    return (triton is not None and logits.is_cuda
            and logits.dtype in (torch.float16, torch.bfloat16))


def cross_entropy_sum(logits, gold, fused=True, weight=None):
    """(N, V) logits, (N,) gold -> (summed NLL in fp32, argmax (N,) of the logits).

    weight (N,), when given, multiplies each row's NLL: 0 drops the rows that only pad a
    captured step's output tokens to a fixed count."""
    if fused and fused_available(logits):
        return _FusedCrossEntropy.apply(logits, gold, weight)
    if weight is None:
        return F.cross_entropy(logits.float(), gold, reduction="sum"), logits.argmax(-1)
    nll = F.cross_entropy(logits.float(), gold, reduction="none")
    return (nll * weight).sum(), logits.argmax(-1)
