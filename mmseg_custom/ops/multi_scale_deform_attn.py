"""Multi-scale deformable attention (Deformable DETR), compiled with a PyTorch fallback.

``multi_scale_deformable_attn_pytorch`` (``grid_sample``) is the specification. The compiled
kernels of ``vitsplit_msda_ext`` (built by ``bash ops/make.sh``) compute the same thing faster and
with less memory; ``multi_scale_deformable_attn`` picks them when they are built for the tensors'
device and falls back to the specification otherwise, so nothing here requires the extension.
While tracing (ONNX export) it is the specification too: bilinear ``GridSample`` and matmuls.
"""
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

try:
    import vitsplit_msda_ext as _ext
except ImportError:  # not built: everything runs on the PyTorch reference
    _ext = None


def compiled_ops_available(device='cpu') -> bool:
    """Whether the compiled kernels are built for ``device`` (a str or ``torch.device``)."""
    if _ext is None:
        return False
    kind = torch.device(device).type
    return kind == 'cpu' or (kind == 'cuda' and _ext.with_cuda())


def multi_scale_deformable_attn_pytorch(value, value_spatial_shapes, sampling_locations,
                                        attention_weights):
    """Multi-scale deformable attention in PyTorch: the reference the kernels must match.

    Each query samples ``num_points`` points per head on each level with bilinear
    interpolation (pixel centres at ``(i + 0.5) / size``, zeros outside the map) and returns
    their sum weighted by ``attention_weights``.

    Args:
        value (Tensor): (bs, num_keys, num_heads, head_dim), the levels' keys flattened
            row-major one level after another.
        value_spatial_shapes (Tensor): (num_levels, 2) int64, the (H, W) of each level.
        sampling_locations (Tensor): (bs, num_queries, num_heads, num_levels, num_points, 2),
            (x, y) normalised to [0, 1] on each level.
        attention_weights (Tensor): (bs, num_queries, num_heads, num_levels, num_points).

    Returns:
        Tensor: (bs, num_queries, num_heads * head_dim), in ``value``'s dtype.

    Half and bfloat16 values are sampled and summed in float32, as the kernels do: locations
    rounded to bf16 (8 bits) would move the points by up to 1/256 of a map (a quarter pixel on a
    64-pixel level).
    """
    bs, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in value_spatial_shapes.tolist()]
    acc = torch.float64 if value.dtype == torch.float64 else torch.float32
    # grid_sample takes (x, y) in [-1, 1] and one (batch * head) image per grid.
    grids = (2 * sampling_locations.to(acc) - 1).transpose(1, 2).flatten(0, 1)
    samples = []
    for level, (level_value, (h, w)) in enumerate(
            zip(value.split([h * w for h, w in shapes], dim=1), shapes)):
        image = level_value.permute(0, 2, 3, 1).reshape(bs * num_heads, head_dim, h, w)
        samples.append(F.grid_sample(image.to(acc), grids[:, :, level], mode='bilinear',
                                     padding_mode='zeros', align_corners=False))
    # (bs * heads, head_dim, num_queries, num_levels * num_points)
    samples = torch.stack(samples, dim=-2).flatten(-2)
    weights = attention_weights.to(acc).transpose(1, 2).reshape(
        bs * num_heads, 1, num_queries, num_levels * num_points)
    output = (samples * weights).sum(-1).view(bs, num_heads * head_dim, num_queries)
    return output.transpose(1, 2).to(value.dtype).contiguous()


class MultiScaleDeformableAttnFunction(torch.autograd.Function):
    """The compiled kernels as an autograd function; arguments as in the extension's ``forward``:
    contiguous, on one device, locations and weights in ``value``'s accumulation dtype."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations,
                attention_weights):
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights)
        return _ext.forward(value, spatial_shapes, level_start_index, sampling_locations,
                            attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grad_value, grad_locations, grad_weights = _ext.backward(
            *ctx.saved_tensors, grad_output.contiguous())
        return grad_value, None, None, grad_locations, grad_weights


def multi_scale_deformable_attn(value, value_spatial_shapes, value_level_start_index,
                                sampling_locations, attention_weights, im2col_step=64):
    """Multi-scale deformable attention on the compiled kernels where built, else in PyTorch.

    Arguments and result as in :func:`multi_scale_deformable_attn_pytorch`, plus:

    Args:
        value_level_start_index (Tensor): (num_levels,) int64, index of each level's first key
            in ``value``: ``[0, H0 * W0, H0 * W0 + H1 * W1, ...]``.
        im2col_step (int): accepted for compatibility with mmcv's signature; the kernels here
            need no im2col buffer, so it has no effect. Default: 64.

    Half and bfloat16 values are supported; the kernels read locations and weights in float and
    accumulate in float (double for double values).
    """
    # While tracing (ONNX export), the specification: the kernels' autograd.Function has no
    # graph form, the reference exports as GridSample.
    tracing = torch.jit.is_tracing()
    if tracing or not compiled_ops_available(value.device):
        if value.is_cuda and not tracing:
            warnings.warn('vitsplit_msda_ext has no CUDA kernels (run bash ops/make.sh on a '
                          'machine with nvcc): deformable attention runs on the slower, '
                          'memory-hungry PyTorch reference')
        return multi_scale_deformable_attn_pytorch(value, value_spatial_shapes,
                                                   sampling_locations, attention_weights)
    acc = torch.float64 if value.dtype == torch.float64 else torch.float32
    return MultiScaleDeformableAttnFunction.apply(
        value.contiguous(),
        value_spatial_shapes.to(value.device, torch.long).contiguous(),
        value_level_start_index.to(value.device, torch.long).contiguous(),
        sampling_locations.to(acc).contiguous(),
        attention_weights.to(acc).contiguous())
