"""ViT-Split's deformable conv on CUDA (grid_sample + GEMM, models/utils/deform_conv.py) against
torchvision's and mmcv's CUDA kernels, at the prior head's shape, in float64 and in bf16."""
import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from mmseg_custom.models.utils.deform_conv import deform_conv2d

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU'),
]


def make_inputs(batch, channels, size, dtype, seed=0):
    """Input, offsets and weight of a 3x3 deformable conv with padding 1 on the GPU. Offsets are
    up to 3 pixels, with a fractional part of 0.02-0.98, so that no tap falls on a pixel centre,
    where the bilinear derivative jumps."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=gen, dtype=torch.float64)
    whole = torch.randint(-3, 3, (batch, 18, size, size), generator=gen).double()
    offset = whole + 0.02 + 0.96 * torch.rand(whole.shape, generator=gen, dtype=torch.float64)
    weight = torch.randn(channels, channels, 3, 3, generator=gen, dtype=torch.float64)
    weight /= (9 * channels) ** 0.5
    return [t.to('cuda', dtype) for t in (x, offset, weight)]


def forward_backward(fn, inputs, grad_out):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    return out, torch.autograd.grad(out, inputs, grad_out.to(out.dtype))


def relative_error(actual, expected):
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


REFERENCES = {
    'torchvision': lambda x, off, w: tv_deform_conv2d(x, off, w, padding=1),
    'mmcv': lambda x, off, w: pytest.importorskip('mmcv.ops').deform_conv2d(
        x, off, w, 1, 1, 1, 1, 1, False, 32),
}


@pytest.mark.parametrize('reference', REFERENCES, ids=REFERENCES)
def test_float64_matches_cuda_kernels(reference):
    """ViT-Split-S's prior head: 384 channels on the 37 x 37 grid of a 518 crop."""
    inputs = make_inputs(2, 384, 37, torch.float64)
    grad_out = torch.randn(2, 384, 37, 37, dtype=torch.float64, device='cuda')
    out, grads = forward_backward(lambda x, o, w: deform_conv2d(x, o, w, padding=1), inputs,
                                  grad_out)
    ref, ref_grads = forward_backward(REFERENCES[reference], inputs, grad_out)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for name, grad, expected in zip(('input', 'offset', 'weight'), grads, ref_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-9,
                                   msg=lambda m, name=name: f'grad of {name}: {m}')


def test_bf16_autocast_matches_float64():
    """Under bf16 autocast (what --amp runs), at ViT-Split-L's width, on bf16 input and offsets
    (what the layers before it hand it there): the GEMM runs in bf16, the sampling in float32.
    Tolerance, relative Frobenius error against torchvision in float64 on the same input values:
    1e-2 for the output and each gradient (bf16 operands round to 2**-9, float32 accumulation)."""
    x, offset, weight = make_inputs(2, 1024, 37, torch.float32)
    inputs = (x.bfloat16(), offset.bfloat16(), weight)
    grad_out = torch.randn(2, 1024, 37, 37, device='cuda').bfloat16()

    def ours(x, off, w):
        with torch.autocast('cuda', dtype=torch.bfloat16):
            return deform_conv2d(x, off, w, padding=1)

    out, grads = forward_backward(ours, inputs, grad_out)
    assert out.dtype == torch.bfloat16
    ref, ref_grads = forward_backward(REFERENCES['torchvision'],
                                      [t.double() for t in inputs], grad_out.double())
    assert relative_error(out, ref) < 1e-2
    for name, grad, expected in zip(('input', 'offset', 'weight'), grads, ref_grads):
        err = relative_error(grad, expected)
        assert err < 1e-2, f'grad of {name}: relative error {err:.2e}'
