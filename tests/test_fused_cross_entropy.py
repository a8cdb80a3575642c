"""The fused cross-entropy (Triton, CUDA) gives F.cross_entropy's loss, gradient, argmax."""
import pytest
import torch
import torch.nn.functional as F

from onmt_mirror.losses.fused_cross_entropy import cross_entropy_sum, fused_available


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused kernel runs on CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("vocab", [20000, 4096, 37])
def test_fused_cross_entropy_equals_the_stock_one(dtype, vocab):
    torch.manual_seed(0)
    logits = (4 * torch.randn(300, vocab, device="cuda")).to(dtype).requires_grad_()
    gold = torch.randint(vocab, (300,), device="cuda")
    gold[:3] = logits[:3].argmax(-1)  # some rows right, for the argmax
    assert fused_available(logits)
    nll, argmax = cross_entropy_sum(logits, gold)
    (3 * nll).backward()
    ours = logits.grad.clone()
    logits.grad = None
    ref = F.cross_entropy(logits.float(), gold, reduction="sum")
    (3 * ref).backward()
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-3)
    assert argmax.tolist() == logits.argmax(-1).tolist()
    torch.testing.assert_close(ours.float(), logits.grad.float(), rtol=1e-2, atol=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused kernel runs on CUDA")
def test_fused_cross_entropy_propagates_nan():
    """Mirror's non-finite guard must still see a NaN logit."""
    logits = torch.randn(4, 50, device="cuda", dtype=torch.float16)
    logits[2, 7] = float("nan")
    nll, _ = cross_entropy_sum(logits, torch.zeros(4, dtype=torch.long, device="cuda"))
    assert torch.isnan(nll)
