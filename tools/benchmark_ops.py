"""Time multi-scale deformable attention: the compiled kernels against the PyTorch reference.

Forward and backward at Mask2Former pixel-decoder sizes (by default batch 2, 256 channels in 8
heads, levels at strides 8, 16 and 32 of a 512 crop, 4 points, every key a query), both paths
measured in the same run on the same inputs: median of --repeats runs after --warmup runs.

    python tools/benchmark_ops.py                             # CPU, all cores torch uses
    python tools/benchmark_ops.py --device cuda --dtype float16
"""
import argparse
import statistics
import time

import torch

from mmseg_custom.ops import (compiled_ops_available, multi_scale_deformable_attn,
                              multi_scale_deformable_attn_pytorch)

DTYPES = {'float32': torch.float32, 'float64': torch.float64, 'float16': torch.float16,
          'bfloat16': torch.bfloat16}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:index] (default: cpu)')
    parser.add_argument('--dtype', default='float32', choices=DTYPES)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--crop', type=int, default=512, help='square input size in pixels')
    parser.add_argument('--strides', type=int, nargs='+', default=[8, 16, 32])
    parser.add_argument('--embed-dims', type=int, default=256)
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--points', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    return parser.parse_args()


def make_inputs(args, device, dtype):
    """Value, shapes, level starts, locations and weights as the pixel decoder makes them."""
    shapes = torch.tensor([[args.crop // s, args.crop // s] for s in args.strides], device=device)
    start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    num_keys = int(shapes.prod(1).sum())
    head_dim = args.embed_dims // args.heads
    levels = len(args.strides)
    value = torch.randn(args.batch, num_keys, args.heads, head_dim, device=device).to(dtype)
    # Locations and weights stay float (double for double values), as under AMP.
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    loc = torch.rand(args.batch, num_keys, args.heads, levels, args.points, 2, device=device,
                     dtype=acc)
    weights = torch.rand(args.batch, num_keys, args.heads, levels, args.points, device=device,
                         dtype=acc).softmax(-1)
    return value, shapes, start, loc, weights


def time_path(fn, inputs, grad_out, args, device):
    """Median forward and backward seconds of fn(value, loc, weights)."""
    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    forward, backward = [], []
    for i in range(args.warmup + args.repeats):
        leaves = [t.detach().requires_grad_() for t in inputs]
        sync()
        t0 = time.perf_counter()
        out = fn(*leaves)
        sync()
        t1 = time.perf_counter()
        out.backward(grad_out)
        sync()
        t2 = time.perf_counter()
        if i >= args.warmup:
            forward.append(t1 - t0)
            backward.append(t2 - t1)
    return statistics.median(forward), statistics.median(backward), out.detach()


def main():
    args = parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if not compiled_ops_available(device):
        raise SystemExit(f'the compiled kernels are not built for {device.type}: '
                         'run bash ops/make.sh (on a machine with nvcc and a GPU for cuda)')
    value, shapes, start, loc, weights = make_inputs(args, device, dtype)
    grad_out = torch.randn(value.shape[0], loc.shape[1], args.embed_dims, device=device).to(dtype)
    paths = {
        'reference': lambda v, l, w: multi_scale_deformable_attn_pytorch(v, shapes, l, w),
        'compiled': lambda v, l, w: multi_scale_deformable_attn(v, shapes, start, l, w),
    }
    results = {name: time_path(fn, (value, loc, weights), grad_out, args, device)
               for name, fn in paths.items()}

    threads = f'{torch.get_num_threads()} threads' if device.type == 'cpu' else \
        torch.cuda.get_device_name(device)
    levels = ', '.join(f'{h}x{w}' for h, w in shapes.tolist())
    print(f'{device} ({threads}), {args.dtype}: batch {args.batch}, {args.heads} heads x '
          f'{args.embed_dims // args.heads} channels, levels {levels}, {args.points} points, '
          f'{loc.shape[1]} queries; median of {args.repeats} after {args.warmup} warm-up')
    print(f'{"path":<10} {"forward ms":>11} {"backward ms":>12} {"total ms":>9}')
    for name, (fwd, bwd, _) in results.items():
        print(f'{name:<10} {fwd * 1e3:>11.1f} {bwd * 1e3:>12.1f} {(fwd + bwd) * 1e3:>9.1f}')
    (ref_f, ref_b, ref_out), (f, b, out) = results['reference'], results['compiled']
    print(f'{"speed-up":<10} {ref_f / f:>10.1f}x {ref_b / b:>11.1f}x '
          f'{(ref_f + ref_b) / (f + b):>8.1f}x')
    diff = (out.float() - ref_out.float()).abs().max().item()
    print(f'max |compiled - reference| of the output: {diff:.2e}')


if __name__ == '__main__':
    main()
