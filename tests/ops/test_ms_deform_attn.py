"""The compiled multi-scale deformable attention against its PyTorch reference."""
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils.cpp_extension import include_paths

from mmseg_custom.ops import (compiled_ops_available, multi_scale_deformable_attn,
                              multi_scale_deformable_attn_pytorch)
from mmseg_custom.ops import multi_scale_deform_attn as msda

OPS_DIR = Path(__file__).resolve().parents[2] / 'ops'

needs_ext = pytest.mark.skipif(not compiled_ops_available(),
                               reason='extension not built: run bash ops/make.sh')
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and compiled_ops_available('cuda')),
    reason='needs a CUDA GPU and the extension built with CUDA kernels (bash ops/make.sh on a '
    'machine with nvcc and a GPU)' if torch.cuda.is_available() else 'needs a CUDA GPU')

# (level shapes, batch, heads, head_dim, queries, points)
CASES = {
    'multi_level': ([(6, 4), (3, 5), (2, 2)], 2, 3, 5, 7, 4),
    'one_level': ([(5, 7)], 2, 2, 8, 6, 3),
    'batch_1': ([(4, 4), (2, 3)], 1, 4, 4, 9, 2),
}
# The CUDA backward reduces over channels per warp (head_dim <= 32 dividing 32), across warps
# (multiples of 32) or not at all (other head_dim): one case each.
CUDA_CASES = {**CASES, 'head_dim_64': ([(5, 6), (3, 3)], 2, 2, 64, 10, 4)}


def make_inputs(levels, batch, heads, head_dim, queries, points, dtype=torch.float64,
                device='cpu', low=-0.2, high=1.2, seed=0):
    """Random inputs; locations drawn from [low, high] so that some fall off the maps."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.long)
    start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    num_keys = int(shapes.prod(1).sum())
    value = torch.randn(batch, num_keys, heads, head_dim, generator=gen, dtype=dtype)
    loc = low + (high - low) * torch.rand(batch, queries, heads, len(levels), points, 2,
                                          generator=gen, dtype=dtype)
    weights = torch.rand(batch, queries, heads, len(levels), points, generator=gen, dtype=dtype)
    return [t.to(device) for t in (value, shapes, start, loc, weights)]


def run_both(value, shapes, start, loc, weights):
    """Outputs and gradients of (value, loc, weights) from the entry point and the reference,
    for the same random output gradient."""
    results = []
    grad_out = None
    for fn in (lambda v, l, w: multi_scale_deformable_attn(v, shapes, start, l, w),
               lambda v, l, w: multi_scale_deformable_attn_pytorch(v, shapes, l, w)):
        inputs = [t.detach().clone().requires_grad_() for t in (value, loc, weights)]
        out = fn(*inputs)
        if grad_out is None:
            grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1),
                                   dtype=out.dtype).to(out.device)
        results.append((out, torch.autograd.grad(out, inputs, grad_out)))
    return results


@needs_ext
@pytest.mark.parametrize('case', CASES.values(), ids=CASES.keys())
def test_compiled_matches_reference_float64(case):
    (out, grads), (ref_out, ref_grads) = run_both(*make_inputs(*case))
    assert out.shape == (case[1], case[4], case[2] * case[3])
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    for name, grad, ref in zip(('value', 'sampling_locations', 'attention_weights'), grads,
                               ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-11, msg=f'grad of {name}')


@needs_ext
def test_compiled_matches_reference_float32():
    (out, grads), (ref_out, ref_grads) = run_both(
        *make_inputs(*CASES['multi_level'], dtype=torch.float32))
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-4)


@needs_ext
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_compiled_low_precision_cpu(dtype):
    value, shapes, start, loc, weights = make_inputs(*CASES['multi_level'])
    value = value.to(dtype)
    out = multi_scale_deformable_attn(value, shapes, start, loc.float(), weights.float())
    ref = multi_scale_deformable_attn_pytorch(value.float(), shapes, loc.float(), weights.float())
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


@needs_ext
def test_gradcheck():
    value, shapes, start, loc, weights = make_inputs([(3, 4), (2, 2)], 1, 2, 3, 2, 2)
    inputs = [t.requires_grad_() for t in (value, loc, weights)]
    assert torch.autograd.gradcheck(
        lambda v, l, w: msda.MultiScaleDeformableAttnFunction.apply(v, shapes, start, l, w),
        inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@needs_ext
def test_points_off_the_maps_give_zero():
    levels = [(4, 4), (2, 3)]
    # Every location at least one pixel beyond the border of every level.
    value, shapes, start, loc, weights = make_inputs(levels, 2, 2, 4, 5, 3, low=1.6, high=3.0)
    loc[..., 0] *= torch.tensor([1, -1]).repeat(5)[:5].view(1, 5, 1, 1, 1).to(loc)
    (out, grads), (ref_out, _) = run_both(value, shapes, start, loc, weights)
    assert not out.any() and not ref_out.any()
    assert all(not g.any() for g in grads)


@needs_ext
def test_locations_on_pixel_centres_and_borders():
    # Sampling exactly at pixel centres returns the pixel; exactly at the map's edge, half of
    # it (the other half is zero padding).
    h, w = 3, 4
    xs = torch.cat([(torch.arange(w) + 0.5) / w, torch.tensor([0.0, 1.0])])
    ys = torch.cat([(torch.arange(h) + 0.5) / h, torch.tensor([0.0, 1.0])])
    grid = torch.stack(torch.meshgrid(xs, ys, indexing='xy'), -1).view(-1, 2).double()
    value, shapes, start, _, _ = make_inputs([(h, w)], 1, 1, 2, 1, 1)
    loc = grid.view(1, -1, 1, 1, 1, 2)
    weights = torch.ones(1, grid.shape[0], 1, 1, 1, dtype=torch.float64)
    out = multi_scale_deformable_attn(value, shapes, start, loc, weights)
    ref = multi_scale_deformable_attn_pytorch(value, shapes, loc, weights)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[0, 0], value[0, 0, 0])  # centre of pixel (0, 0)


@needs_ext
def test_entry_point_uses_the_kernel_when_built(monkeypatch):
    def fail(*args):
        raise AssertionError('the reference ran although the kernel is built')

    monkeypatch.setattr(msda, 'multi_scale_deformable_attn_pytorch', fail)
    value, shapes, start, loc, weights = make_inputs(*CASES['batch_1'])
    assert msda.multi_scale_deformable_attn(value, shapes, start, loc, weights).shape[0] == 1


def test_falls_back_to_reference_without_extension(monkeypatch):
    monkeypatch.setattr(msda, '_ext', None)

    def fail(*args):
        raise AssertionError('the compiled kernel ran although the extension is absent')

    monkeypatch.setattr(msda.MultiScaleDeformableAttnFunction, 'apply', fail)
    assert not compiled_ops_available() and not compiled_ops_available('cuda')
    value, shapes, start, loc, weights = make_inputs(*CASES['multi_level'])
    value.requires_grad_()
    out = multi_scale_deformable_attn(value, shapes, start, loc, weights)
    torch.testing.assert_close(out, multi_scale_deformable_attn_pytorch(value, shapes, loc,
                                                                         weights))
    out.sum().backward()
    assert value.grad is not None


@needs_ext
def test_kernel_rejects_inconsistent_inputs():
    value, shapes, start, loc, weights = make_inputs(*CASES['multi_level'])
    with pytest.raises(RuntimeError, match='keys'):
        msda._ext.forward(value[:, 1:].contiguous(), shapes, start, loc, weights)
    with pytest.raises(RuntimeError, match='level_start_index'):
        msda._ext.forward(value, shapes, start + 1, loc, weights)
    with pytest.raises(RuntimeError, match='must be Float'):
        msda._ext.forward(value.float(), shapes, start, loc, weights)


@pytest.mark.skipif(shutil.which('nvcc') is None, reason='nvcc not found: cannot compile the '
                    'CUDA sources')
@pytest.mark.parametrize('source', sorted(OPS_DIR.glob('csrc/**/*.cu')), ids=lambda p: p.name)
def test_cuda_sources_compile(source, tmp_path):
    """Compiles each .cu for sm_80 and sm_90 (no GPU needed), so CUDA errors fail CI."""
    includes = [f'-I{path}' for path in include_paths()]
    cmd = ['nvcc', '-std=c++20', '-O3', *includes,
           '-gencode', 'arch=compute_80,code=sm_80', '-gencode', 'arch=compute_90,code=sm_90',
           '-c', str(source), '-o', str(tmp_path / 'out.o')]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f'{" ".join(cmd)}\n{result.stdout}\n{result.stderr}'


def relative_error(actual, expected):
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('case', CUDA_CASES.values(), ids=CUDA_CASES.keys())
def test_cuda_matches_reference(case, dtype):
    (out, grads), (ref_out, ref_grads) = run_both(*make_inputs(*case, dtype=dtype, device='cuda'))
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, ref_out, **tol)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, **tol)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_low_precision(dtype):
    """Half/bfloat16 values with float locations and weights (as under AMP), against the
    reference in float on the same rounded values."""
    value, shapes, start, loc, weights = make_inputs(
        [(32, 32), (16, 16), (8, 8)], 2, 8, 32, 300, 4, dtype=torch.float32, device='cuda')
    value = value.to(dtype)
    grad_out = torch.randn(2, 300, 8 * 32, device='cuda')
    inputs = [t.clone().requires_grad_() for t in (value, loc, weights)]
    out = multi_scale_deformable_attn(inputs[0], shapes, start, *inputs[1:])
    grads = torch.autograd.grad(out, inputs, grad_out.to(dtype))
    ref_inputs = [t.float().requires_grad_() for t in (value, loc, weights)]
    ref_out = multi_scale_deformable_attn_pytorch(ref_inputs[0], shapes, *ref_inputs[1:])
    ref_grads = torch.autograd.grad(ref_out, ref_inputs, grad_out)
    assert out.dtype == dtype and grads[0].dtype == dtype
    assert relative_error(out, ref_out) < 1e-2
    for grad, ref in zip(grads, ref_grads):
        assert relative_error(grad, ref) < 1e-2


@pytest.mark.parametrize('batch_first', [True, False])
@pytest.mark.parametrize('ref_dims', [2, 4])
def test_module_matches_mmcv(batch_first, ref_dims):
    """Our nn.Module is mmcv's with the sampling swapped: same parameters, same output (mmcv's
    runs its PyTorch reference on CPU)."""
    mmcv_ops = pytest.importorskip('mmcv.ops')
    from mmseg_custom.ops import MultiScaleDeformableAttention
    torch.manual_seed(0)
    cfg = dict(embed_dims=16, num_heads=2, num_levels=2, num_points=3, dropout=0.0,
               batch_first=batch_first)
    ours = MultiScaleDeformableAttention(**cfg)
    theirs = mmcv_ops.MultiScaleDeformableAttention(**cfg)
    for module in (ours, theirs):
        gen = torch.Generator().manual_seed(1)
        for p in module.parameters():  # non-trivial offsets and weights
            p.data = torch.randn(p.shape, generator=gen) * 0.3
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    shapes = torch.tensor([[4, 5], [2, 3]])
    start = torch.tensor([0, 20])
    query = torch.randn(2, 26, 16)
    refs = torch.rand(2, 26, 2, ref_dims)
    if not batch_first:
        query = query.transpose(0, 1)
    args = dict(query=query, reference_points=refs, spatial_shapes=shapes,
                level_start_index=start, key_padding_mask=torch.rand(2, 26) > 0.8)
    torch.testing.assert_close(ours(**args), theirs(**args), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_reference_keeps_locations_in_float32(dtype, monkeypatch):
    """The fallback samples low-precision values at float32 locations, as the kernels do:
    on a 64-pixel level, locations rounded to bf16 would move the points by up to 1/4 pixel."""
    monkeypatch.setattr(msda, '_ext', None)  # the entry point falls back to the reference
    value, shapes, start, loc, weights = make_inputs([(64, 64), (16, 16)], 2, 2, 4, 50, 4,
                                                     dtype=torch.float32, low=0.0, high=1.0)
    value = value.to(dtype)
    out = multi_scale_deformable_attn(value, shapes, start, loc, weights)
    # Same low-precision values, everything else in float32, rounded once at the end.
    expected = multi_scale_deformable_attn_pytorch(value.float(), shapes, loc, weights)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected.to(dtype), rtol=0, atol=0)
