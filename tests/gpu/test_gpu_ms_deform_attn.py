"""The CUDA kernels of our multi-scale deformable attention (ops/) at Mask2Former's encoder size:
against the PyTorch reference in float64 and in bf16, against mmcv's CUDA kernel, and gradcheck.

tests/ops/test_ms_deform_attn.py checks the same kernels on small inputs; these add the sizes the
pixel decoder runs (5376 keys and queries, so many threads add to the same value gradient)."""
import pytest
import torch

from mmseg_custom.ops import (compiled_ops_available, multi_scale_deformable_attn,
                              multi_scale_deformable_attn_pytorch)
from mmseg_custom.ops import multi_scale_deform_attn as msda

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU'),
    pytest.mark.skipif(not compiled_ops_available('cuda'),
                       reason='vitsplit_msda_ext has no CUDA kernels (bash ops/make.sh with nvcc)'),
]

# Mask2Former's pixel decoder on a 512 crop: strides 8, 16, 32 (64, 32, 16 px maps), 8 heads of
# 32 channels, 4 points; every key is also a query.
LEVELS = [(64, 64), (32, 32), (16, 16)]
BATCH, HEADS, HEAD_DIM, POINTS = 2, 8, 32, 4


def make_inputs(levels, batch, heads, head_dim, queries, points, dtype, seed=0):
    """Inputs on the GPU. Each location lies 0.02-0.98 pixel past a pixel centre (one pixel
    beyond the borders at most), never on one: there the bilinear derivative jumps, and float
    rounding of the kernel's index arithmetic would pick either side."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.long)
    start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    value = torch.randn(batch, int(shapes.prod(1).sum()), heads, head_dim, generator=gen)
    size = (batch, queries, heads, len(levels), points)
    wh = shapes.flip(-1).double().view(1, 1, 1, -1, 1, 2)  # each level's (W, H), as (x, y)
    # Pixel indices -1 .. W (or H) per level, then an offset from that pixel's centre.
    pixel = (torch.rand(*size, 2, generator=gen, dtype=torch.float64) * (wh + 2)).floor() - 1
    frac = 0.02 + 0.96 * torch.rand(*size, 2, generator=gen, dtype=torch.float64)
    loc = (pixel + 0.5 + frac) / wh
    weights = torch.rand(size, generator=gen, dtype=torch.float64)
    return [t.to('cuda', dtype if t.is_floating_point() else None)
            for t in (value, shapes, start, loc, weights)]


def grads_of(fn, inputs, grad_out):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    return out, torch.autograd.grad(out, inputs, grad_out.to(out.dtype))


def relative_error(actual, expected):
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


def encoder_inputs(dtype):
    num_keys = sum(h * w for h, w in LEVELS)
    return make_inputs(LEVELS, BATCH, HEADS, HEAD_DIM, num_keys, POINTS, dtype)


def test_float64_matches_reference_forward_and_gradients():
    value, shapes, start, loc, weights = encoder_inputs(torch.float64)
    grad_out = torch.randn(BATCH, loc.shape[1], HEADS * HEAD_DIM, dtype=torch.float64,
                           device='cuda')
    out, grads = grads_of(lambda v, l, w: multi_scale_deformable_attn(v, shapes, start, l, w),
                          (value, loc, weights), grad_out)
    ref, ref_grads = grads_of(
        lambda v, l, w: multi_scale_deformable_attn_pytorch(v, shapes, l, w),
        (value, loc, weights), grad_out)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    # Gradients add up many atomic contributions in a run-dependent order: 1e-9.
    for name, grad, expected in zip(('value', 'sampling_locations', 'attention_weights'), grads,
                                    ref_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-11,
                                   msg=lambda m, name=name: f'grad of {name}: {m}')


def test_bf16_matches_float64_reference():
    """bf16 values, float32 locations and weights (what autocast gives the pixel decoder).

    Tolerance, relative Frobenius error against the float64 reference on the same rounded
    inputs: 1e-2 for the output and the value gradient, which are stored in bf16 (a rounding of
    2**-9 each; the kernel accumulates in float32), 1e-4 for the location and weight gradients,
    which the kernel keeps in float32."""
    value, shapes, start, loc, weights = encoder_inputs(torch.float64)
    value, loc, weights = value.bfloat16(), loc.float(), weights.float()
    grad_out = torch.randn(BATCH, loc.shape[1], HEADS * HEAD_DIM, device='cuda').bfloat16()
    out, grads = grads_of(lambda v, l, w: multi_scale_deformable_attn(v, shapes, start, l, w),
                          (value, loc, weights), grad_out)
    assert out.dtype == grads[0].dtype == torch.bfloat16
    assert grads[1].dtype == grads[2].dtype == torch.float32
    ref, ref_grads = grads_of(
        lambda v, l, w: multi_scale_deformable_attn_pytorch(v, shapes, l, w),
        [t.double() for t in (value, loc, weights)], grad_out.double())
    assert relative_error(out, ref) < 1e-2
    for name, grad, expected, tol in zip(('value', 'sampling_locations', 'attention_weights'),
                                         grads, ref_grads, (1e-2, 1e-4, 1e-4)):
        err = relative_error(grad, expected)
        assert err < tol, f'grad of {name}: relative error {err:.2e} >= {tol}'


def test_matches_mmcv_cuda_kernel():
    """Against mmcv's CUDA kernel (Deformable DETR's, written by others), float64."""
    mmcv_msda = pytest.importorskip('mmcv.ops.multi_scale_deform_attn')
    value, shapes, start, loc, weights = encoder_inputs(torch.float64)
    grad_out = torch.randn(BATCH, loc.shape[1], HEADS * HEAD_DIM, dtype=torch.float64,
                           device='cuda')
    out, grads = grads_of(lambda v, l, w: multi_scale_deformable_attn(v, shapes, start, l, w),
                          (value, loc, weights), grad_out)
    theirs, their_grads = grads_of(
        lambda v, l, w: mmcv_msda.MultiScaleDeformableAttnFunction.apply(v, shapes, start, l, w,
                                                                         64),
        (value, loc, weights), grad_out)
    torch.testing.assert_close(out, theirs, rtol=1e-10, atol=1e-12)
    for grad, expected in zip(grads, their_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-11)


def test_gradcheck_on_cuda():
    value, shapes, start, loc, weights = make_inputs([(3, 4), (2, 2)], 1, 2, 3, 2, 2,
                                                     torch.float64)
    inputs = [t.requires_grad_() for t in (value, loc, weights)]
    assert torch.autograd.gradcheck(
        lambda v, l, w: msda.MultiScaleDeformableAttnFunction.apply(v, shapes, start, l, w),
        inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
