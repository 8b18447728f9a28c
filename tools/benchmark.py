"""Training and inference speed, memory and FLOPs of configs, side by side on the same inputs.

    python tools/benchmark.py CONFIG [CONFIG ...] [--batch 2] [--infer-batch 16 1] [--crop 512]
        [--iters 10] [--device cpu|cuda] [--amp] [--compile] [--profile-infer]
        [--reference-inference] [--json OUT]

Per config (random weights, random images and labels, the config's own optimizer and param groups):
* training step time (forward + loss + backward + optimizer step), median after warm-up;
* peak training memory above the idle process (CUDA: peak allocated; CPU: peak RSS, each config in
  a fresh process so one config's peak cannot hide another's);
* training FLOPs per step (forward, and backward only where gradients flow) and inference FLOPs
  per image, counted by ``torch.utils.flop_counter`` (matmuls, convs, attention; added here: the
  CPU attention kernel, and the taps of ``grid_sample`` and of bilinear/bicubic resizing, i.e.
  the deformable convs' sampling, whose GEMM torch counts, and the final resize of the logits;
  elementwise ops, norms and activations are not counted, as in torch's counter);
* inference images/s (forward + logits resized to the crop, no grad), at each ``--infer-batch``
  (default: the training ``--batch``), and against the first config: time ratio, FLOP ratio and
  their quotient (1.0: this config runs as many FLOPs per second as the first);
* where the training time goes (trunk, task head, prior head + fusion, decode head, loss,
  backward, optimizer, and the whole forward), from ``torch.profiler`` ranges; with
  ``--profile-infer`` also where one inference pass goes (the model's named ranges and the
  operators with the most self time);
* EoMT configs (``custom_imports``) train with masked attention on (the start of training) and
  infer with it annealed away (``attn_mask_probs`` 0, a trained model);
* with ``--slide``: mmseg's one-crop-at-a-time slide inference vs ours on a larger image;
* with ``--cts 0,0.15,0.3,0.45``: instead of the above, inference images/s of the frozen trunk
  (policy included) and of the whole model at each token-sharing reduction, against the same
  model built without the CTS code path (``measure_cts``);
* with ``--onnx``: instead of the above, inference images/s of eager PyTorch and of ONNX Runtime
  (CPU) on the exported graph (``tools/export.py``; same weights and inputs) at each graph
  optimisation level, and of its int8 dynamic quantisation, with their logit errors
  (``measure_onnx``).
Ratios against the first config are printed, so put the reference (e.g. full fine-tuning) first.
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmengine.utils import import_modules_from_strings
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

import mmseg_custom  # noqa: F401 (registers the models)

# Training stages: the model's ``vitsplit.*`` ranges (models without them, e.g. EoMT, show '-')
# and the benchmark's own; 'forward' is the whole forward pass with the loss.
STAGES = ['trunk', 'task_head', 'prior_fusion', 'decode_head', 'loss', 'forward', 'backward',
          'optimizer']
# Inference ranges: the model's ``vitsplit.*`` ranges inside the benchmark's 'inference'.
INFER_STAGES = ['trunk', 'task_head', 'prior_head', 'fusion', 'prior_fusion', 'decode_head',
                'inference']


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _resize_flops(taps):
    # Each output value reads `taps` inputs: one multiply and one add per tap.
    return lambda x, *a, out_shape=None, **kw: 2 * taps * _numel(out_shape)


def _grid_sample_flops(x, grid, mode, *a, out_shape=None, **kw):
    taps = {0: 4, 1: 0, 2: 16}.get(mode, 4)  # bilinear, nearest, bicubic
    return 2 * taps * _numel(out_shape)


def _grid_sample_backward_flops(grad, x, grid, mode, *a, out_shape=None, **kw):
    # Gradients of the input (scatter of each tap) and of the grid (4 products per tap).
    taps = {0: 4, 1: 0, 2: 16}.get(mode, 4)
    return 2 * 2 * taps * _numel(grad)


def flop_counter():
    aten = torch.ops.aten
    # Keys are overload packets (FlopCounterMode looks up ``func._overloadpacket``; an overload
    # such as ``.default`` would never match). torch counts SDPA's CUDA kernels but not the CPU
    # flash kernel: same formula.
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v),
        # torch counts neither sampling nor resizing. The deformable convs (models/utils/
        # deform_conv.py) sample with grid_sample, beside GEMMs that torch counts.
        aten.grid_sampler_2d: _grid_sample_flops,
        aten.grid_sampler_2d_backward: _grid_sample_backward_flops,
        aten.upsample_bilinear2d: _resize_flops(4),
        aten.upsample_bilinear2d_backward:  # each output gradient goes back to 4 inputs
        lambda g, *a, out_shape=None, **kw: 2 * 4 * _numel(g),
        aten.upsample_bicubic2d: _resize_flops(16),
    }
    return FlopCounterMode(display=False, custom_mapping=mapping)


def drop_pretrained(node):
    """Random weights, whatever the trunk: no weights file needed, same compute."""
    if isinstance(node, dict):
        if 'pretrained' in node and 'type' in node:
            node['pretrained'] = None
        for v in node.values():
            drop_pretrained(v)
    elif isinstance(node, list):
        for v in node:
            drop_pretrained(v)


def build(config, device):
    cfg = Config.fromfile(config)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    drop_pretrained(cfg.model)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model = revert_sync_batchnorm(model).to(device)
    return cfg, model


def make_batch(cfg, batch, crop, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, crop, crop, generator=g).to(device)
    num_classes = cfg.model.decode_head.num_classes
    # Blocky labels, at most 12 classes an image (ADE20K images hold about 10): mask-classification
    # heads (EoMT, Mask2Former) match one target mask per class present, as on real data. The
    # linear head's loss costs the same whatever the labels.
    cells = max(1, crop // 64)
    pools = torch.stack([torch.randperm(num_classes, generator=g)[:12] for _ in range(batch)])
    picks = torch.randint(0, pools.shape[1], (batch, cells * cells), generator=g)
    labels = pools.gather(1, picks).view(batch, 1, cells, cells).float()
    labels = F.interpolate(labels, size=(crop, crop), mode='nearest').long()
    labels[:, :, :crop // 16] = 255
    samples = []
    for i in range(batch):
        s = SegDataSample(gt_sem_seg=PixelData(data=labels[i].to(device)))
        s.set_metainfo(dict(img_shape=(crop, crop), ori_shape=(crop, crop), pad_shape=(crop, crop)))
        samples.append(s)
    return x, samples


def sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def rss_bytes(field='VmRSS'):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss():
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # resets VmHWM (peak RSS) to the current RSS


class Bench:
    """One config ready to train and infer on fixed random inputs."""

    def __init__(self, config, args):
        torch.manual_seed(0)
        self.config, self.device = config, args.device
        self.cfg, self.model = build(config, args.device)
        self.optim = build_optim_wrapper(self.model, self.cfg.optim_wrapper)
        self.x, self.samples = make_batch(self.cfg, args.batch, args.crop, args.device)
        gen = torch.Generator().manual_seed(1)
        self.infer_x = {n: torch.randn(n, 3, args.crop, args.crop, generator=gen).to(args.device)
                        for n in args.infer_batch}
        self.amp = (torch.autocast(args.device.split(':')[0], dtype=torch.bfloat16)
                    if args.amp else nullcontext())
        self.loss_fn = torch.compile(self.model.loss) if args.compile else self.model.loss
        self.infer_fn = (torch.compile(self.model.encode_decode) if args.compile
                         else self.model.encode_decode)

    def train_step(self):
        self.model.train()
        set_mask_probs(self.model, 1.0)
        with torch.profiler.record_function('forward'), self.amp:
            losses = self.loss_fn(self.x, self.samples)
            loss = sum(v for k, v in losses.items() if 'loss' in k)
        with torch.profiler.record_function('backward'):
            loss.backward()
        with torch.profiler.record_function('optimizer'):
            self.optim.step()
            self.optim.zero_grad()
        sync(self.device)

    @torch.no_grad()
    def infer(self, batch):
        x = self.infer_x[batch]
        self.model.eval()
        set_mask_probs(self.model, 0.0)
        with torch.profiler.record_function('inference'), self.amp:
            self.infer_fn(x, [dict(img_shape=tuple(x.shape[2:]))] * batch)
        sync(self.device)


def set_mask_probs(model, value):
    """EoMT's masked-attention probabilities: 1 at the start of training, 0 once annealed."""
    probs = getattr(getattr(model, 'decode_head', None), 'attn_mask_probs', None)
    if isinstance(probs, torch.Tensor):
        probs.fill_(value)


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure_alone(config, args):
    """FLOPs, peak memory and the stage profile of one config, alone in this process."""
    b = Bench(config, args)
    with flop_counter() as fc:
        b.train_step()
    train_flops = fc.get_total_flops()
    for _ in range(args.warmup - 1):
        b.train_step()
    if args.device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
        idle = torch.cuda.memory_allocated()
    else:
        ctypes.CDLL('libc.so.6').malloc_trim(0)  # return freed heap, so idle is really idle
        idle = rss_bytes()
        reset_peak_rss()
    for _ in range(2):
        b.train_step()
    peak = (torch.cuda.max_memory_allocated() if args.device.startswith('cuda')
            else rss_bytes('VmHWM')) - idle
    stages = profile_stages(b.train_step, args.device)
    with flop_counter() as fc:
        b.infer(args.infer_batch[0])
    out = dict(config=config, train_gflop=train_flops / 1e9, train_peak_mib=peak / 2**20,
               infer_gflop_per_img=fc.get_total_flops() / 1e9 / args.infer_batch[0],
               stages_ms=stages,
               trainable=sum(p.numel() for p in b.model.parameters() if p.requires_grad))
    if args.profile_infer:
        out['infer_profile'] = profile_inference(b, args.infer_batch[0], args.device)
    return out


def measure_times(configs, args):
    """Step and inference times of all configs, interleaved step by step so that the machine's
    noise falls on all of them alike."""
    benches = [Bench(c, args) for c in configs]
    for b in benches:
        for _ in range(args.warmup):
            b.train_step()
            for n in args.infer_batch:
                b.infer(n)
    train = {b.config: [] for b in benches}
    infer = {(b.config, n): [] for b in benches for n in args.infer_batch}
    for _ in range(args.iters):
        for b in benches:
            train[b.config].append(timed(b.train_step))
            for n in args.infer_batch:
                infer[b.config, n].append(timed(lambda: b.infer(n)))
    out = {}
    for b in benches:
        by_batch = {n: n / statistics.median(infer[b.config, n]) for n in args.infer_batch}
        train_ms = 1e3 * statistics.median(train[b.config])
        out[b.config] = dict(train_ms=train_ms, train_img_s=1e3 * args.batch / train_ms,
                             infer_img_s=by_batch[args.infer_batch[0]],
                             infer_img_s_by_batch={str(n): v for n, v in by_batch.items()})
        if args.slide:
            out[b.config].update(measure_slide(b.model, args, b.amp))
    return out


def profile_stages(train_step, device):
    """Milliseconds per stage of one training step, from the profiler's named ranges."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith('cuda'):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        train_step()
        sync(device)
    totals = {}
    for evt in prof.key_averages():
        name = evt.key.split('.')[-1] if evt.key.startswith('vitsplit.') else evt.key
        if name in STAGES:
            t = evt.device_time_total if device.startswith('cuda') else evt.cpu_time_total
            totals[name] = totals.get(name, 0) + t / 1e3
    return {k: round(totals[k], 2) for k in STAGES if k in totals}


def profile_inference(b, batch, device, runs=3, top=14):
    """Where one inference pass goes: the model's named ranges (ms) and the operators with the
    most self time (ms, calls), each the median over ``runs`` profiled passes."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith('cuda'):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    cuda = device.startswith('cuda')
    b.infer(batch)
    ranges, ops = [], []
    for _ in range(runs):
        with torch.profiler.profile(activities=activities) as prof:
            b.infer(batch)
        r, o = {}, {}
        for evt in prof.key_averages():
            key = evt.key[len('vitsplit.'):] if evt.key.startswith('vitsplit.') else evt.key
            if key in INFER_STAGES:
                t = evt.device_time_total if cuda else evt.cpu_time_total
                r[key] = r.get(key, 0) + t / 1e3
            elif not evt.key.startswith(('vitsplit.', 'inference', 'ProfilerStep')):
                t = evt.self_device_time_total if cuda else evt.self_cpu_time_total
                o[evt.key] = (t / 1e3, evt.count)
        ranges.append(r)
        ops.append(o)
    med = lambda vals: statistics.median(vals) if vals else 0.0  # noqa: E731
    stage_ms = {k: round(med([r[k] for r in ranges if k in r]), 2)
                for k in INFER_STAGES if any(k in r for r in ranges)}
    names = set().union(*ops)
    op_ms = {n: (med([o[n][0] for o in ops if n in o]), max(o[n][1] for o in ops if n in o))
             for n in names}
    top_ops = sorted(op_ms.items(), key=lambda kv: -kv[1][0])[:top]
    return dict(batch=batch, stages_ms=stage_ms,
                top_ops=[dict(op=n, self_ms=round(ms, 2), calls=c) for n, (ms, c) in top_ops])


def measure_slide(model, args, amp):
    """mmseg's slide inference vs the batched one, same model and image, alternated; max logit
    difference between the two."""
    h, w = args.crop, 2 * args.crop
    img = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1)).to(args.device)
    fns = dict(mmseg=EncoderDecoder.slide_inference, batched=type(model).slide_inference)
    model.eval()
    with torch.no_grad(), amp:
        logits = {k: fn(model, img, [dict(img_shape=(h, w))]) for k, fn in fns.items()}
        times = {k: [] for k in fns}
        for _ in range(max(3, args.iters // 2)):
            for k, fn in fns.items():
                times[k].append(timed(lambda: (fn(model, img, [dict(img_shape=(h, w))]),
                                               sync(args.device))))
    return dict(slide_mmseg_ms=1e3 * statistics.median(times['mmseg']),
                slide_batched_ms=1e3 * statistics.median(times['batched']),
                slide_max_abs_diff=(logits['mmseg'] - logits['batched']).abs().max().item())


def measure_cts(config, reductions, args):
    """Inference images/s of the trunk pass (tokenize with the policy, frozen blocks, maps) and of
    the whole model, without the CTS code path and at each reduction, interleaved."""
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    drop_pretrained(cfg.model)
    sharing = cfg.model.backbone.pop('token_sharing', None) or dict(
        type='TokenSharing', policy=dict(type='CTSPolicyNet'))
    sharing['policy']['pretrained'] = None  # random policy: same compute, other choices
    torch.manual_seed(0)
    plain = MODELS.build(cfg.model)
    plain.init_weights()
    cfg.model.backbone.token_sharing = dict(sharing, reduction=0.0)
    cts = MODELS.build(cfg.model)
    cts.init_weights()
    cts.load_state_dict(plain.state_dict(), strict=False)  # same trunk and heads
    x, _ = make_batch(cfg, args.batch, args.crop, args.device)
    metas = [dict(img_shape=(args.crop, args.crop))] * args.batch
    settings = [('no CTS code', plain, None)] + [(f'CTS {100 * r:.0f} %', cts, r)
                                                 for r in reductions]
    models = []
    for _, model, _ in settings:
        model = revert_sync_batchnorm(model).to(args.device).eval()
        models.append(model)

    def run(i, whole):
        model, reduction = models[i], settings[i][2]
        if reduction is not None:
            model.backbone.token_sharing.reduction = reduction
        with torch.no_grad():
            if whole:
                model.encode_decode(x, metas)
            else:
                model.backbone.frozen_features(x)
        sync(args.device)

    # CPU seconds of this process too: on a machine shared with other work they vary far less
    # than wall time (which counts the time other processes hold the cores).
    times = {(i, whole): [] for i in range(len(settings)) for whole in (False, True)}
    cpu = {key: [] for key in times}
    for _ in range(args.warmup):
        for key in times:
            run(*key)
    for _ in range(args.iters):
        for key in times:
            start = time.process_time()
            times[key].append(timed(lambda: run(*key)))
            cpu[key].append(time.process_time() - start)
    rows = []
    for i, (name, model, reduction) in enumerate(settings):
        if reduction is None:
            tokens = None
        else:
            model.backbone.token_sharing.reduction = reduction
            with torch.no_grad():
                tokens = model.backbone.token_sharing(model.backbone.trunk, x)[0].shape[1]
        rows.append(dict(setting=name, reduction=reduction, tokens=tokens,
                         trunk_img_s=args.batch / statistics.median(times[(i, False)]),
                         model_img_s=args.batch / statistics.median(times[(i, True)]),
                         trunk_img_cpu_s=args.batch / statistics.median(cpu[(i, False)]),
                         model_img_cpu_s=args.batch / statistics.median(cpu[(i, True)])))
    return rows


def measure_onnx(config, args):
    """Inference images/s of eager ``encode_decode`` and of onnxruntime sessions on its export
    (crop x crop, dynamic batch), at each ``--infer-batch``, interleaved; logit errors against
    eager on the first batch's inputs."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from mmseg_custom.deploy.export import export_onnx
    from mmseg_custom.deploy.ort_segmentor import make_session
    torch.manual_seed(0)
    cfg, model = build(config, 'cpu')
    model.eval()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        path, int8 = os.path.join(tmp, 'model.onnx'), os.path.join(tmp, 'model.int8.onnx')
        start = time.perf_counter()
        export_onnx(model, path, (args.crop, args.crop), verify=False)
        export_s = time.perf_counter() - start
        # MatMul only: onnxruntime's ConvInteger path wants every conv weight an initializer
        # (constant folding makes some Constant nodes), and the matmuls hold the compute.
        quantize_dynamic(path, int8, weight_type=QuantType.QInt8, op_types_to_quantize=['MatMul'])
        sessions = {f'ORT {level}': make_session(path, threads, level)
                    for level in ('disable', 'basic', 'all')}
        sessions['ORT all, int8 dynamic'] = make_session(int8, threads, 'all')
    gen = torch.Generator().manual_seed(1)
    xs = {n: torch.randn(n, 3, args.crop, args.crop, generator=gen) for n in args.infer_batch}

    def eager(n):
        with torch.no_grad():
            return model.encode_decode(xs[n], [dict(img_shape=(args.crop, args.crop))] * n)

    runs = {'eager PyTorch': lambda n: eager(n).numpy()}
    for name, sess in sessions.items():
        runs[name] = (lambda n, sess=sess:
                      sess.run(None, {sess.get_inputs()[0].name: xs[n].numpy()})[0])
    ref = runs['eager PyTorch'](args.infer_batch[0])
    errors = {}
    for name, fn in runs.items():
        got = fn(args.infer_batch[0])
        errors[name] = (float(abs(got - ref).max()),
                        float((got.argmax(1) == ref.argmax(1)).mean()))
    times = {(name, n): [] for name in runs for n in args.infer_batch}
    for _ in range(args.warmup):
        for name, n in times:
            runs[name](n)
    for _ in range(args.iters):
        for name, n in times:
            times[name, n].append(timed(lambda: runs[name](n)))
    rows = []
    for name in runs:
        rows.append(dict(setting=name, max_abs_err=errors[name][0], argmax=errors[name][1],
                         img_s={str(n): n / statistics.median(times[name, n])
                                for n in args.infer_batch}))
    return dict(rows=rows, threads=threads, export_s=export_s)


def print_onnx_table(config, result):
    rows, batches = result['rows'], list(result['rows'][0]['img_s'])
    print(f'\n{os.path.basename(config)}: inference images/s (medians), {result["threads"]} '
          f'threads for torch and onnxruntime; export took {result["export_s"]:.1f} s')
    print(f'{"setting":<24}' + ''.join(f'{"img/s b" + n:>12}{"x eager":>9}' for n in batches)
          + f'{"max|err|":>11}{"argmax %":>10}')
    ref = rows[0]['img_s']
    for r in rows:
        print(f'{r["setting"]:<24}'
              + ''.join(f'{r["img_s"][n]:>12.3f}{r["img_s"][n] / ref[n]:>9.2f}' for n in batches)
              + f'{r["max_abs_err"]:>11.1e}{100 * r["argmax"]:>10.3f}')


def print_cts_table(config, rows):
    ref = rows[0]
    print(f'\n{os.path.basename(config)}: inference images per second of wall time and per '
          'CPU-second of this process (medians)')
    cols = [('trunk img/s', 'trunk_img_s'), ('model img/s', 'model_img_s'),
            ('trunk img/CPU-s', 'trunk_img_cpu_s'), ('model img/CPU-s', 'model_img_cpu_s')]
    print(f'{"setting":<14}{"tokens":>8}' + ''.join(f'{c:>17}{"x no CTS":>10}' for c, _ in cols))
    for r in rows:
        tokens = '' if r['tokens'] is None else str(r['tokens'])
        print(f'{r["setting"]:<14}{tokens:>8}' + ''.join(
            f'{r[k]:>17.3f}{r[k] / ref[k]:>10.2f}' for _, k in cols))


def add_infer_ratios(results):
    """Per config and inference batch, against the first config: time ratio (seconds per image),
    FLOP ratio (inference FLOPs per image) and time ratio / FLOP ratio."""
    ref = results[0]
    for r in results:
        flop_ratio = r['infer_gflop_per_img'] / ref['infer_gflop_per_img']
        r['infer_flop_ratio'] = flop_ratio
        r['infer_vs_ref'] = {}
        for n, img_s in r['infer_img_s_by_batch'].items():
            time_ratio = ref['infer_img_s_by_batch'][n] / img_s
            r['infer_vs_ref'][n] = dict(time_ratio=time_ratio, flop_ratio=flop_ratio,
                                        time_per_flop=time_ratio / flop_ratio)


def print_table(results):
    ref = results[0]
    batches = list(ref['infer_img_s_by_batch'])
    print(f'\n{"config":<58}{"train ms":>10}{"x ref":>7}{"GFLOP":>9}{"x ref":>7}'
          f'{"peak MiB":>10}{"x ref":>7}' + ''.join(f'{"img/s b" + n:>13}' for n in batches))
    for r in results:
        name = os.path.basename(r['config'])[:57]
        print(f'{name:<58}{r["train_ms"]:>10.1f}{r["train_ms"] / ref["train_ms"]:>7.2f}'
              f'{r["train_gflop"]:>9.1f}{r["train_gflop"] / ref["train_gflop"]:>7.2f}'
              f'{r["train_peak_mib"]:>10.0f}{r["train_peak_mib"] / ref["train_peak_mib"]:>7.2f}'
              + ''.join(f'{r["infer_img_s_by_batch"][n]:>13.2f}' for n in batches))
    print('\ninference against the first config (time x = its img/s / this img/s; '
          'time/FLOP = time x / FLOP x, 1.00: as many FLOPs per second as the first):')
    print(f'{"config":<58}{"GFLOP/img":>11}{"FLOP x":>8}'
          + ''.join(f'{"img/s b" + n:>12}{"time x":>8}{"time/FLOP":>11}' for n in batches))
    for r in results:
        name = os.path.basename(r['config'])[:57]
        print(f'{name:<58}{r["infer_gflop_per_img"]:>11.1f}{r["infer_flop_ratio"]:>8.2f}'
              + ''.join(f'{r["infer_img_s_by_batch"][n]:>12.3f}'
                        f'{r["infer_vs_ref"][n]["time_ratio"]:>8.2f}'
                        f'{r["infer_vs_ref"][n]["time_per_flop"]:>11.2f}' for n in batches))
    print('\nwhere one training step goes (ms; profiled step, so totals exceed the median):')
    print(f'{"config":<58}' + ''.join(f'{s:>13}' for s in STAGES))
    for r in results:
        name = os.path.basename(r['config'])[:57]
        # A stage the model does not have (no task head in a baseline) is '-', not 0.
        print(f'{name:<58}' + ''.join(f'{r["stages_ms"][s]:>13.1f}' if s in r['stages_ms']
                                      else f'{"-":>13}' for s in STAGES))
    for r in results:
        prof = r.get('infer_profile')
        if not prof:
            continue
        print(f'\nwhere one inference pass goes, {os.path.basename(r["config"])}, batch '
              f'{prof["batch"]} (ms, median of 3 profiled passes): '
              + ', '.join(f'{k} {v:.1f}' for k, v in prof['stages_ms'].items()))
        for op in prof['top_ops']:
            print(f'    {op["op"]:<48}{op["self_ms"]:>10.1f} ms{op["calls"]:>7} calls')
    if any('slide_mmseg_ms' in r for r in results):
        print('\nslide inference, one image of crop x 2*crop (ms):')
        for r in results:
            if 'slide_mmseg_ms' in r:
                print(f'{os.path.basename(r["config"])[:57]:<58} mmseg {r["slide_mmseg_ms"]:.1f}'
                      f'  batched {r["slide_batched_ms"]:.1f}'
                      f'  speed-up {r["slide_mmseg_ms"] / r["slide_batched_ms"]:.2f}x'
                      f'  max |diff| {r["slide_max_abs_diff"]:.1e}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--batch', type=int, default=2, help='training batch')
    parser.add_argument('--infer-batch', type=int, nargs='+',
                        help='inference batch sizes (default: --batch)')
    parser.add_argument('--crop', type=int, default=512)
    parser.add_argument('--iters', type=int, default=10, help='timed iterations (median)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast')
    parser.add_argument('--compile', action='store_true', help='torch.compile the model')
    parser.add_argument('--slide', action='store_true', help='also time slide inference')
    parser.add_argument('--reference-inference', action='store_true',
                        help='CPU inference with the linear heads in NCHW, as training runs them '
                        '(inference runs them channels-last since 2026-12-02): the layout\'s gain '
                        'measured in one run; same results up to float rounding')
    parser.add_argument('--profile-infer', action='store_true',
                        help='also profile one inference pass per config (named ranges, top ops)')
    parser.add_argument('--threads', type=int, default=0, help='torch threads on CPU (0: default)')
    parser.add_argument('--json', help='write all figures here')
    parser.add_argument('--cts', metavar='R,R,...',
                        help='token-sharing reductions to time for inference (e.g. '
                        '0,0.15,0.3,0.45) instead of the training benchmark')
    parser.add_argument('--onnx', action='store_true',
                        help='time eager PyTorch against ONNX Runtime (CPU) for inference at each '
                        '--infer-batch, instead of the training benchmark')
    parser.add_argument('--one', help=argparse.SUPPRESS)  # child process: measure one config
    args = parser.parse_args()
    args.infer_batch = args.infer_batch or [args.batch]
    if args.reference_inference:
        from mmseg_custom.models.decode_heads.linear_heads import _BNLinearHead
        _BNLinearHead.channels_last_inference = False
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure_alone(args.one, args)))
        return
    if args.onnx:
        print(f'torch {torch.__version__}, onnxruntime {__import__("onnxruntime").__version__}, '
              f'cpu, crop {args.crop}, inference batches {args.infer_batch}, threads '
              f'{torch.get_num_threads()}, random weights')
        results = {c: measure_onnx(c, args) for c in args.configs}
        for config, result in results.items():
            print_onnx_table(config, result)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(results, f, indent=1)
        return
    if args.cts:
        reductions = [float(r) for r in args.cts.split(',')]
        print(f'{torch.__version__}, {args.device}, batch {args.batch}, crop {args.crop}, '
              f'threads {torch.get_num_threads()}, random weights')
        results = {c: measure_cts(c, reductions, args) for c in args.configs}
        for config, rows in results.items():
            print_cts_table(config, rows)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(results, f, indent=1)
        return
    results = []
    for config in args.configs:
        print(f'FLOPs, memory and profile of {config} (own process) ...', flush=True)
        cmd = [sys.executable, __file__, *sys.argv[1:], '--one', config]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, text=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print('timing all configs, interleaved ...', flush=True)
    times = measure_times(args.configs, args)
    for r in results:
        r.update(times[r['config']], device=args.device, batch=args.batch,
                 infer_batch=args.infer_batch, crop=args.crop,
                 amp=args.amp, compile=args.compile)
    add_infer_ratios(results)
    print(f'\n{torch.__version__}, {args.device}, batch {args.batch} (inference '
          f'{", ".join(map(str, args.infer_batch))}), crop {args.crop}, '
          f'amp {args.amp}, compile {args.compile}, threads {torch.get_num_threads()}')
    print_table(results)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
