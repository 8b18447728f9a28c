"""Our deformable conv computes torchvision's (= mmcv's) deform_conv2d, values and gradients."""
import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from mmseg_custom.models.utils.deform_conv import deform_conv2d


@pytest.mark.parametrize('shape, k, pad, dil', [
    ((2, 6, 7, 9), 3, 1, 1), ((1, 4, 1, 5), 3, 1, 1), ((2, 3, 8, 8), 3, 2, 2), ((1, 5, 6, 4), 1, 0, 1)])
def test_matches_torchvision_in_float64(shape, k, pad, dil):
    torch.manual_seed(0)
    B, C, H, W = shape
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    ho = H + 2 * pad - dil * (k - 1)
    wo = W + 2 * pad - dil * (k - 1)
    # Large offsets: many taps land outside the map, where both must read zeros.
    off = (torch.randn(B, 2 * k * k, ho, wo, dtype=torch.float64) * 3).requires_grad_()
    w = torch.randn(C + 2, C, k, k, dtype=torch.float64, requires_grad=True)
    ref = tv_deform_conv2d(x, off, w, padding=pad, dilation=dil)
    out = deform_conv2d(x, off, w, padding=pad, dilation=dil)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (x, off, w), g), torch.autograd.grad(ref, (x, off, w), g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match='do not match'):
        deform_conv2d(torch.randn(1, 3, 5, 5), torch.randn(1, 18, 5, 5), torch.randn(4, 2, 3, 3))
