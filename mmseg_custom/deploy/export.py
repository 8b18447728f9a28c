"""ONNX export of a segmentor's whole-image inference, checked against eager PyTorch.

The graph is the segmentor's own ``encode_decode`` (backbone, neck, decode head, resize of the
logits to the input size; for ``EoMT``, its blocks with the queries and the last layer's semantic
scores, masked attention only where deterministic, see :func:`check_family`), traced by
``torch.onnx.export(..., dynamo=False)``: the TorchScript exporter. Why that one: it records the
shape arithmetic of the model code (``x.shape[-1] // 14``, centre padding, the resize to the
input size) as ONNX ops, so one trace at a generic size gives a graph for every size, needs no
``onnxscript``, and exports mmdet's Mask2Former as it is;
``torch.export`` (the dynamo exporter) needs every size-dependent Python branch of the model
code (position-embedding interpolation, padding, token sharing) rewritten for symbolic shapes.

Deformable convolutions and multi-scale deformable attention export as what their PyTorch code
is: bilinear ``GridSample`` (opset 16) plus matmuls. No custom domain: any ONNX runtime with
opset 16 runs them, not only onnxruntime builds with ``DeformConv`` (a CPU kernel since 1.2x).

Every export is checked before it gets its name: onnx's checker, then onnxruntime (CPU) against
eager PyTorch on random inputs, at batch 2, and with ``dynamic`` at a second size. A graph that
does not reproduce the model (a size-dependent branch baked into the trace, an op the runtime
lacks) is never written to ``out``.
"""
import json
import math
import os
import os.path as osp
import re
import shutil
import tempfile
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..models.backbones.timm_vit import ROPES_FOLLOWING_TRACED_SIZE

FORMAT_VERSION = '1'
DEFAULT_OPSET = 17
MIN_OPSET = 16  # GridSample
INPUT_NAME = 'input'
INPUT_NAME_RAW = 'image'
OUTPUT_NAME = 'seg_logits'

BACKBONES = ('ViTSplit', 'ViTSplitGate', 'PlainBackbone', 'ReinBackbone', 'PEFTBackbone')
LINEAR_HEADS = ('ConvUpsampleLinearBNHead', 'LinearBNHead', 'MultiScaleConvUpsampleLinearBNHead')
MASK2FORMER_HEADS = ('Mask2FormerHead', 'ReinMask2FormerHead')
SEGMENTORS = ('EncoderDecoder', 'BatchedSlideEncoderDecoder')
# EoMT's own segmentor: its encode_decode runs the blocks with the queries and the head's scores.
EOMT_SEGMENTOR = 'EoMT'
EOMT_BACKBONES = ('EoMTEncoder', 'ViTSplitEoMTEncoder')
EOMT_HEADS = ('EoMTHead', )
# timm rotary embeddings whose in-graph table follows the input size (checked by the tests).
DYNAMIC_ROPE = ROPES_FOLLOWING_TRACED_SIZE


class ExportError(RuntimeError):
    """The model cannot be exported as asked; the message names the cause and the fix."""


# ---------------------------------------------------------------------------------------------
# Which models, which sizes


def check_family(model: nn.Module, dynamic: bool = False) -> dict:
    """Describe the segmentor's family and what sizes its graph can take; raise
    :class:`ExportError` for a family the exporter does not know, a ``dynamic`` it cannot
    honour, or an EoMT whose masked attention is random at inference (an ``attn_mask_probs``
    strictly between 0 and 1: each query keeps its mask with that probability on every run).

    Returns:
        dict: ``family`` (str), ``patch_size`` (int), ``pos_grid`` ((h, w) of the stored absolute
        position embedding, or None), ``dynamic_ok`` (bool) and ``static_reason`` (why the graph
        needs a fixed size, or None).
    """
    seg_type = type(model).__name__
    if seg_type not in SEGMENTORS + (EOMT_SEGMENTOR, ):
        raise ExportError(f'export: segmentor {seg_type} is not supported; the exporter traces '
                          f'the encode_decode of {SEGMENTORS + (EOMT_SEGMENTOR, )}.')
    backbone, head = model.backbone, model.decode_head
    b_type, h_type = type(backbone).__name__, type(head).__name__
    is_eomt = seg_type == EOMT_SEGMENTOR
    backbones = EOMT_BACKBONES if is_eomt else BACKBONES
    heads = EOMT_HEADS if is_eomt else LINEAR_HEADS + MASK2FORMER_HEADS
    if b_type not in backbones:
        raise ExportError(f'export: backbone {b_type} is not a family the exporter supports '
                          f'in {seg_type} ({", ".join(backbones)}).')
    if h_type not in heads:
        raise ExportError(f'export: decode head {h_type} is not supported in {seg_type} '
                          f'(supported: {", ".join(heads)}).')
    trunk = backbone.trunk
    trunk_name = type(trunk).__name__
    if trunk_name == 'TimmViT':
        trunk_name = f'TimmViT({trunk.name})'
    parts = [b_type]
    sharing = getattr(backbone, 'token_sharing', None)
    if sharing is not None and sharing.reduction > 0:
        parts.append('CTS')
    adapter = getattr(backbone, 'adapter', None)
    if adapter is not None:
        parts.append(type(adapter).__name__.lstrip('_'))
    if getattr(backbone, 'frozen', None) is not None:
        parts.append('frozen' if backbone.frozen else 'finetuned')
    is_m2f = h_type in MASK2FORMER_HEADS
    if is_eomt:
        masked = _eomt_masked_blocks(head)
        parts.append('masked attention' if masked else 'no masks')
    family = f'{"+".join(parts)}/{trunk_name}/{"Mask2Former" if is_m2f else h_type}'
    if is_eomt:
        probs = [float(p) for p in head.attn_mask_probs] if head.masked_attn else []
        if any(0 < p < 1 for p in probs):
            raise ExportError(
                f'export: {family}: the masked attention is random at inference '
                f'(attn_mask_probs {probs}: each query keeps its mask with that probability, '
                'drawn anew on every run, in eval too), so no graph can reproduce the model. '
                'Export a trained model (the annealing of EoMTMaskAnnealingHook ended: all 0, '
                'no masks), or one whose probabilities are all 0 or 1 (deterministic).')

    rope = getattr(trunk, 'rope', None)
    rope_type = None if rope is None else type(rope).__name__
    static_reason = None
    if is_m2f:
        static_reason = (f'{h_type}: mmdet\'s pixel decoder builds its reference points and the '
                         'deformable-attention level sizes with Python integers, so the traced '
                         'graph holds the sizes of one input')
    elif rope_type not in (None, ) + DYNAMIC_ROPE:
        static_reason = (f'{rope_type} (timm rotary embedding): its table, computed in the graph, '
                         'does not follow the input size in the traced graph')
    elif sharing is not None and sharing.reduction > 0:
        static_reason = ('token sharing (CTS): the number of shared superpatches is computed in '
                         'Python from the patch grid, so the traced graph holds the count of one '
                         'input size')
    if dynamic and static_reason:
        raise ExportError(f'export: --dynamic is not possible for {family}: {static_reason}. '
                          'Export at the size you run (--shape H W; the test_cfg crop size for '
                          'slide inference, whose crops all have that size).')
    return dict(family=family, patch_size=int(trunk.patch_size), pos_grid=_pos_grid(trunk),
                dynamic_ok=static_reason is None, static_reason=static_reason, eomt=is_eomt)


def _eomt_masked_blocks(head: nn.Module) -> List[int]:
    """Query blocks of an ``EoMTHead`` that run with masked attention at inference (their
    ``attn_mask_probs`` > 0)."""
    if not head.masked_attn:
        return []
    return [k for k, p in enumerate(head.attn_mask_probs.tolist()) if p > 0]


def _pos_grid(trunk: nn.Module) -> Optional[Tuple[int, int]]:
    """Grid of a trunk's stored absolute position embedding (None: none or unknown)."""
    pos = getattr(trunk, 'pos_embed', None)
    if isinstance(pos, torch.Tensor):  # DINOv2: cls + m*m
        m = int(round(math.sqrt(pos.shape[1] - 1)))
        return (m, m)
    inner = getattr(trunk, 'model', None)
    if inner is not None and getattr(inner, 'pos_embed', None) is not None:
        return tuple(inner.patch_embed.grid_size)
    return None


def default_shape(cfg) -> Tuple[int, int]:
    """The size a config's model runs on: slide crops or EoMT's (square) windows, else the data
    preprocessor's size."""
    test_cfg = cfg.model.get('test_cfg') or {}
    if test_cfg.get('mode') == 'slide':  # every crop has this size
        return tuple(test_cfg['crop_size'])
    if test_cfg.get('mode') == 'windows':  # EoMT's evaluation windows: square crops
        crop = min(test_cfg['crop_size'])
        return (crop, crop)
    size = cfg.model.get('data_preprocessor', {}).get('size')
    if size:
        return tuple(size)
    raise ExportError('export: the config sets no crop size (test_cfg.crop_size or '
                      'data_preprocessor.size): give --shape H W.')


def generic_trace_shape(shape: Tuple[int, int], patch: int,
                        pos_grid: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """A size near ``shape`` at which every size-dependent branch of the model code takes its
    general path: both sides off the patch multiple (centre padding is traced as ops, zero where
    nothing pads), and a non-square grid (position embeddings are interpolated, never taken as
    stored)."""
    h, w = shape
    while h % patch == 0:
        h += 1
    while w % patch == 0 or -(-w // patch) == -(-h // patch):
        w += 1
    grid = (-(-h // patch), -(-w // patch))
    assert grid[0] != grid[1] and grid != pos_grid
    return h, w


# ---------------------------------------------------------------------------------------------
# The graph


class SegmentorGraph(nn.Module):
    """``segmentor.encode_decode`` as a one-input module: logits (B, C, H, W) at the input size.

    Args:
        segmentor (nn.Module): An ``EncoderDecoder`` in eval mode.
        preprocess (dict | None): ``mean``, ``std`` and ``bgr_to_rgb`` of the config's data
            preprocessor: the graph then takes raw uint8 images (B, H, W, 3) in the channel
            order the config reads (BGR, as OpenCV gives them, where ``bgr_to_rgb``), and
            converts and normalises them itself. None: the input is the preprocessed float
            tensor (B, 3, H, W) the segmentor takes.
    """

    def __init__(self, segmentor: nn.Module, preprocess: Optional[dict] = None):
        super().__init__()
        self.segmentor = segmentor
        self.with_preprocess = preprocess is not None
        if self.with_preprocess:
            self.bgr_to_rgb = bool(preprocess.get('bgr_to_rgb', False))
            mean = preprocess.get('mean') or [0.0, 0.0, 0.0]
            std = preprocess.get('std') or [1.0, 1.0, 1.0]
            self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_preprocess:
            x = x.permute(0, 3, 1, 2).float()
            if self.bgr_to_rgb:
                x = x[:, [2, 1, 0]]
            x = (x - self.mean) / self.std
        size = x.shape[-2:]
        # The heads read only the first image's meta; pad_shape is Mask2Former's output size.
        meta = dict(img_shape=size, pad_shape=size, ori_shape=size)
        return self.segmentor.encode_decode(x, [meta])


def build_segmentor(config, checkpoint: Optional[str] = None) -> Tuple[nn.Module, dict]:
    """The config's segmentor on the CPU in eval mode, with the weights of ``checkpoint``, which
    must fit it exactly; and the dataset meta (classes, palette) for the model's metadata."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmseg.apis import init_model

    import mmseg_custom  # noqa: F401 (registers the models)
    from mmseg_custom.engine import load_checkpoint_exactly

    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise ExportError(f'export: checkpoint {checkpoint} does not exist.')
    model = init_model(cfg, None, device='cpu')
    meta = {}
    if checkpoint is not None:
        meta = load_checkpoint_exactly(model, checkpoint).get('meta', {}) or {}
    model = revert_sync_batchnorm(model).eval()
    return model, _dataset_meta(meta, cfg, model.decode_head.num_classes)


def _dataset_meta(meta: dict, cfg, num_classes: int) -> dict:
    """Classes and palette: the checkpoint's, else the config's dataset class's, else numbered."""
    if 'dataset_meta' in meta and meta['dataset_meta'].get('classes'):
        found = meta['dataset_meta']
    elif 'CLASSES' in meta:
        found = dict(classes=meta['CLASSES'], palette=meta.get('PALETTE'))
    else:
        found = {}
        try:
            from mmseg.registry import DATASETS
            dataset = cfg.get('test_dataloader', {}).get('dataset', {})
            cls = DATASETS.get(dataset.get('type')) if dataset.get('type') else None
            found = dict(getattr(cls, 'METAINFO', {}) or {})
        except Exception:  # noqa: BLE001 (a dataset we cannot resolve: numbered classes)
            found = {}
    classes = list(found.get('classes') or [])
    if len(classes) != num_classes:
        classes = [f'class {i}' for i in range(num_classes)]
        found = {}
    palette = found.get('palette')
    if not palette or len(palette) != num_classes:
        palette = np.random.RandomState(0).randint(0, 256, (num_classes, 3)).tolist()
    return dict(classes=[str(c) for c in classes], palette=[[int(v) for v in p] for p in palette])


# ---------------------------------------------------------------------------------------------
# Export


def export_onnx(model: nn.Module,
                out: str,
                shape: Tuple[int, int],
                dynamic: bool = False,
                opset: int = DEFAULT_OPSET,
                with_preprocess: bool = False,
                preprocess: Optional[dict] = None,
                dataset_meta: Optional[dict] = None,
                config_name: str = '',
                test_cfg: Optional[dict] = None,
                verify: bool = True,
                tolerance: float = 1e-4) -> dict:
    """Export ``model`` (an eval-mode ``EncoderDecoder``) to ``out`` and return a report.

    Args:
        model: The segmentor.
        out: Target ``.onnx`` path; written only when the export is complete and verified
            (temporary folder beside it, then a rename).
        shape: (H, W) of the input the graph is traced and checked at; with ``dynamic``,
            any size works (see :func:`check_family` for the families that allow it).
        dynamic: Dynamic height and width (the batch is always dynamic).
        opset: ONNX opset (>= 16, for GridSample).
        with_preprocess: Put the data preprocessor's normalisation (and BGR -> RGB) in the graph;
            the input is then uint8 (B, H, W, 3).
        preprocess: ``mean``, ``std``, ``bgr_to_rgb`` (the config's data preprocessor).
        dataset_meta: ``classes``, ``palette``; numbered classes when None.
        config_name: Recorded in the metadata.
        test_cfg: The config's test_cfg (slide crops, EoMT's windows), recorded in the metadata.
        verify: Compare onnxruntime with eager PyTorch before writing ``out``.
        tolerance: Largest max-abs logit error accepted by the verification, relative to
            max(1, largest logit).

    Returns:
        dict: ``family``, ``input``, ``shape``, ``trace_shape``, ``dynamic``, ``opset``,
        ``seconds``, and ``checks`` (one dict per verified input: ``shape``, ``max_abs_err``,
        ``max_abs_logit``, ``argmax_agreement``).
    """
    import time
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f'export: --opset {opset} is too low: the deformable ops export as '
                          f'GridSample, opset >= {MIN_OPSET}.')
    info = check_family(model, dynamic)
    patch = info['patch_size']
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < patch:
        raise ExportError(f'export: --shape {shape[0]} {shape[1]} is smaller than one '
                          f'{patch}-pixel patch.')
    if with_preprocess and preprocess is None:
        raise ExportError('export: --with-preprocess needs the config\'s data preprocessor '
                          '(mean, std, bgr_to_rgb).')
    graph = SegmentorGraph(model, preprocess if with_preprocess else None).eval()
    trace_shape = generic_trace_shape(shape, patch, info['pos_grid']) if dynamic else shape
    example = _example_input(1, trace_shape, with_preprocess, seed=0)
    input_name = INPUT_NAME_RAW if with_preprocess else INPUT_NAME
    axes = {0: 'batch'}
    if dynamic:
        h_axis = 1 if with_preprocess else 2  # NHWC raw images, NCHW normalised ones
        axes.update({h_axis: 'height', h_axis + 1: 'width'})

    out = osp.abspath(out)
    folder = osp.dirname(out)
    if not osp.isdir(folder):
        raise ExportError(f'export: the folder of --out, {folder}, does not exist.')
    tmp_dir = tempfile.mkdtemp(prefix='.export-', dir=folder)
    tmp = osp.join(tmp_dir, osp.basename(out))
    start = time.time()
    try:
        with torch.no_grad(), _test_time_settings(model), warnings.catch_warnings():
            # Tracer warnings list every Python int taken from a shape; the verification below,
            # not these, says whether the graph generalises.
            warnings.simplefilter('ignore')
            try:
                torch.onnx.export(graph, (example, ), tmp, dynamo=False, opset_version=opset,
                                  input_names=[input_name], output_names=[OUTPUT_NAME],
                                  dynamic_axes={input_name: axes, OUTPUT_NAME: {
                                      0: 'batch', **({2: 'height', 3: 'width'} if dynamic
                                                     else {})}},
                                  do_constant_folding=True)
            except Exception as err:  # noqa: BLE001 (re-raised with the op and the fix)
                raise _explain_export_failure(err, opset, info['family']) from err
        seconds = time.time() - start
        proto = onnx.load(tmp, load_external_data=False)
        _check_standard_domains(proto)
        onnx.checker.check_model(tmp)
        metadata = _metadata(info, shape, dynamic, opset, with_preprocess, preprocess,
                             dataset_meta, config_name, test_cfg, model)
        del proto.metadata_props[:]
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, tmp)
        checks = []
        if verify:
            checks = verify_export(graph, tmp, shape, dynamic, with_preprocess, patch, tolerance)
        _move_into_place(tmp_dir, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return dict(family=info['family'], input=input_name, shape=shape, trace_shape=trace_shape,
                dynamic=dynamic, opset=opset, seconds=seconds, checks=checks)


class _test_time_settings:
    """The segmentor's test-time autocast and compile switched off for the trace (the graph is
    float32, traced eagerly); restored afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.saved_cfg = self.model.test_cfg
        test_cfg = dict(self.model.test_cfg or {})
        test_cfg.update(amp=False, compile=False)
        self.model.test_cfg = type(self.saved_cfg)(test_cfg) if self.saved_cfg else test_cfg
        return self

    def __exit__(self, *exc):
        self.model.test_cfg = self.saved_cfg
        return False


def _example_input(batch: int, shape: Tuple[int, int], raw: bool, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    h, w = shape
    if raw:
        return torch.randint(0, 256, (batch, h, w, 3), generator=gen, dtype=torch.uint8)
    return torch.randn(batch, 3, h, w, generator=gen)


_ATEN_OP = re.compile(r"operator '([\w:.]+)'")


def _explain_export_failure(err: Exception, opset: int, family: str) -> ExportError:
    text = str(err)
    match = _ATEN_OP.search(text)
    if match:
        return ExportError(
            f'export: {family}: torch.onnx cannot export the operator {match.group(1)} at opset '
            f'{opset}. Try a later --opset (at most {torch.onnx._constants.ONNX_MAX_OPSET}); if '
            'it fails there too, the op has no standard ONNX form and the module using it needs '
            f'an export-friendly path. ({text.splitlines()[0]})')
    return ExportError(f'export: {family}: torch.onnx.export failed: '
                       f'{type(err).__name__}: {text}')


def _check_standard_domains(proto):
    custom = sorted({n.domain for n in proto.graph.node if n.domain not in ('', 'ai.onnx')})
    if custom:
        ops = sorted({f'{n.domain}::{n.op_type}' for n in proto.graph.node if n.domain in custom})
        raise ExportError(f'export: the graph uses custom-domain ops {ops}; only standard ONNX '
                          'ops are allowed (a module of the model exported a custom op).')


def _metadata(info, shape, dynamic, opset, with_preprocess, preprocess, dataset_meta,
              config_name, test_cfg, model) -> Dict[str, str]:
    import onnx

    import mmseg_custom
    patch = info['patch_size']
    num_classes = int(model.decode_head.num_classes)
    dataset_meta = dataset_meta or _dataset_meta({}, {}, num_classes)
    preprocess = preprocess or {}
    if with_preprocess:
        layout = ('NHWC uint8 (batch, height, width, 3), channels '
                  f'{"BGR (as OpenCV reads files)" if preprocess.get("bgr_to_rgb") else "RGB"}; '
                  'the graph converts and normalises')
    else:
        layout = ('NCHW float32 (batch, 3, height, width), RGB where bgr_to_rgb, normalised: '
                  '(pixel - mean) / std')
    if dynamic:
        sizes = dict(dynamic=True, height=None, width=None, min_side=patch,
                     note=f'any height and width >= {patch}; the graph centre-pads each side '
                     f'to a multiple of the patch size {patch} (as the PyTorch model does)')
    else:
        sizes = dict(dynamic=False, height=shape[0], width=shape[1],
                     note=(f'fixed {shape[0]}x{shape[1]} ({info["static_reason"]})'
                           if info['static_reason'] else
                           f'fixed {shape[0]}x{shape[1]}; re-export with --dynamic for other '
                           'sizes'))
    sizes.update(patch_size=patch, batch='dynamic')
    slide = windows = None
    if test_cfg and test_cfg.get('mode') == 'slide':
        slide = dict(crop_size=list(test_cfg['crop_size']), stride=list(test_cfg['stride']))
    if test_cfg and test_cfg.get('mode') == 'windows':
        windows = dict(crop_size=list(test_cfg['crop_size']))
    if info.get('eomt'):
        output = (f'{OUTPUT_NAME}: float32 (batch, {num_classes}, height, width) EoMT semantic '
                  'scores at the input size (last layer: softmax of the class logits without '
                  '"no object" times the sigmoid of the mask logits, summed over the queries); '
                  'argmax over dim 1 is the class')
    else:
        output = (f'{OUTPUT_NAME}: float32 (batch, {num_classes}, height, width) logits at the '
                  'input size; argmax over dim 1 is the class')
    meta = dict(
        format='mmseg-vitsplit segmentor',
        format_version=FORMAT_VERSION,
        config=config_name,
        family=info['family'],
        classes=json.dumps(dataset_meta['classes']),
        palette=json.dumps(dataset_meta['palette']),
        num_classes=str(num_classes),
        mean=json.dumps([float(v) for v in preprocess.get('mean') or []]),
        std=json.dumps([float(v) for v in preprocess.get('std') or []]),
        bgr_to_rgb=json.dumps(bool(preprocess.get('bgr_to_rgb', False))),
        with_preprocess=json.dumps(bool(with_preprocess)),
        input_layout=layout,
        output=output,
        size_constraints=json.dumps(sizes),
        slide_inference=json.dumps(slide),
        windows_inference=json.dumps(windows),
        align_corners=json.dumps(bool(model.decode_head.align_corners)),
        opset=str(opset),
        exporter=f'torch {torch.__version__} torch.onnx (TorchScript-based, dynamo=False), '
        f'onnx {onnx.__version__}, mmseg_custom {mmseg_custom.__version__}',
    )
    return meta


# ---------------------------------------------------------------------------------------------
# Verification


def compare_with_pytorch(graph: nn.Module, session, inputs: torch.Tensor) -> dict:
    """Run ``inputs`` through the eager graph and the onnxruntime session; the errors."""
    with torch.no_grad():
        ref = graph(inputs).float().numpy()
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    if got.shape != ref.shape:
        return dict(shape=list(inputs.shape), max_abs_err=float('inf'),
                    max_abs_logit=float(np.abs(ref).max()), argmax_agreement=0.0,
                    error=f'output {got.shape}, expected {ref.shape}')
    return dict(shape=list(inputs.shape), max_abs_err=float(np.abs(got - ref).max()),
                max_abs_logit=float(np.abs(ref).max()),
                argmax_agreement=float((got.argmax(1) == ref.argmax(1)).mean()))


def verify_export(graph: nn.Module, path: str, shape: Tuple[int, int], dynamic: bool,
                  raw: bool, patch: int, tolerance: float) -> List[dict]:
    """Compare onnxruntime with eager PyTorch: batch 2 at ``shape``; with ``dynamic`` also batch
    1 at another size, off the patch multiple. Raises :class:`ExportError` on a mismatch."""
    from .ort_segmentor import make_session
    session = make_session(path)
    inputs = [_example_input(2, shape, raw, seed=1)]
    if dynamic:
        h, w = shape
        inputs.append(_example_input(1, (h + 2 * patch + 5, max(patch, w - patch + 3)), raw,
                                     seed=2))
    checks = []
    for x in inputs:
        try:
            check = compare_with_pytorch(graph, session, x)
        except Exception as err:  # noqa: BLE001 (onnxruntime raises its own pybind types)
            check = dict(shape=list(x.shape), max_abs_err=float('inf'), max_abs_logit=0.0,
                         argmax_agreement=0.0, error=f'onnxruntime failed: '
                         f'{str(err).splitlines()[0][:300]}')
        checks.append(check)
        scale = max(1.0, check['max_abs_logit'])
        if check['max_abs_err'] > tolerance * scale or check['argmax_agreement'] < 0.999:
            raise ExportError(
                f'export: the ONNX graph does not reproduce the PyTorch model on an input of '
                f'{tuple(x.shape)}: max abs logit error {check["max_abs_err"]:.3g} (largest logit '
                f'{check["max_abs_logit"]:.3g}, tolerance {tolerance} relative), argmax agreement '
                f'{100 * check["argmax_agreement"]:.3f} %' + (f', {check["error"]}' if 'error'
                                                               in check else '') +
                '. A size-dependent branch of the model code was probably baked into the trace'
                + ('; export without --dynamic at the size you run.' if dynamic else '.') +
                f' Nothing was written.')
    return checks


def _move_into_place(tmp_dir: str, out: str):
    """Move the export's files from ``tmp_dir`` next to ``out``: external data files first, the
    .onnx file last, each by rename (atomic within the folder)."""
    folder, name = osp.split(out)
    others = [f for f in os.listdir(tmp_dir) if f != name]
    for f in others:
        os.replace(osp.join(tmp_dir, f), osp.join(folder, f))
    os.replace(osp.join(tmp_dir, name), out)
