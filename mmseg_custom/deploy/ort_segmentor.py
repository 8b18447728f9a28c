"""An mmseg segmentor whose network is an ONNX Runtime session (files of ``tools/export.py``).

``tools/test.py CONFIG model.onnx`` and ``tools/image_demo.py CONFIG model.onnx IMAGE`` use it:
the config's data preprocessor, test pipeline, slide inference (and EoMT's evaluation windows,
``test_cfg.mode='windows'``) and post-processing stay mmseg's (those of
``BatchedSlideEncoderDecoder``); only ``encode_decode`` runs in onnxruntime.
"""
import json
import os.path as osp
import re
from typing import List, Optional

import torch
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS

from ..models.segmentors import BatchedSlideEncoderDecoder
from .export import ExportError


def make_session(path: str, num_threads: Optional[int] = None, optimization: str = 'all',
                 providers: Optional[List[str]] = None):
    """An onnxruntime ``InferenceSession`` of ``path``; an op the installed onnxruntime lacks is
    one :class:`ExportError` naming the op and the fix.

    Args:
        num_threads (int | None): intra-op threads (None: onnxruntime's default, all cores).
        optimization (str): 'all' (default), 'extended', 'basic' or 'disable'.
        providers (list[str] | None): Default: CPU.
    """
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        'disable': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if num_threads:
        opts.intra_op_num_threads = int(num_threads)
    try:
        return ort.InferenceSession(path, sess_options=opts,
                                    providers=providers or ['CPUExecutionProvider'])
    except Exception as err:  # noqa: BLE001 (onnxruntime raises its own pybind types)
        text = str(err)
        op = (re.search(r'implementation for (\w+)\((\d+)\)', text)
              or re.search(r'No Op registered for (\w+) with domain_version of (\d+)', text)
              or re.search(r'(\w+) is not a registered function/op', text))
        if op or 'NOT_IMPLEMENTED' in text:
            if op is None:
                name = 'an op of the graph'
            else:
                name = op.group(1) + (f' (opset {op.group(2)})' if op.lastindex > 1 else '')
            raise ExportError(
                f'onnxruntime {ort.__version__} cannot run {path}: it has no kernel for '
                f'{name}. Install the onnxruntime of requirements.txt, or re-export with '
                f'tools/export.py --opset 17. ({text.splitlines()[0]})') from err
        if not osp.isfile(path):
            raise ExportError(f'{path} does not exist.') from err
        raise ExportError(f'onnxruntime cannot load {path}: {text}') from err


def read_metadata(path_or_session) -> dict:
    """The ``metadata_props`` of an exported model, JSON values decoded."""
    if isinstance(path_or_session, str):
        import onnx
        props = {p.key: p.value
                 for p in onnx.load(path_or_session, load_external_data=False).metadata_props}
    else:
        props = dict(path_or_session.get_modelmeta().custom_metadata_map)
    if props.get('format') != 'mmseg-vitsplit segmentor':
        raise ExportError('the ONNX file was not written by tools/export.py (no '
                          'mmseg-vitsplit metadata); export the model with tools/export.py.')
    meta = {}
    for key, value in props.items():
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return meta


@MODELS.register_module()
class ONNXRuntimeSegmentor(BatchedSlideEncoderDecoder):
    """``BatchedSlideEncoderDecoder`` whose ``encode_decode`` is an onnxruntime session.

    Whole or slide inference (``test_cfg``), padding removal, resizing to the original size and
    the argmax are mmseg's, EoMT's windows (``mode='windows'``) its ``window_inference``; the
    graph gives the logits (EoMT: the scores) of ``encode_decode``. A graph exported with
    ``--with-preprocess`` gets the raw images: the data preprocessor then only stacks them.

    Args:
        onnx_file (str): A model written by ``tools/export.py``.
        data_preprocessor (dict): The config's ``SegDataPreProcessor``.
        test_cfg (dict): The config's test_cfg (``mode='whole'``, ``'slide'`` or ``'windows'``).
        num_threads (int | None): onnxruntime intra-op threads (None: all cores).
    """

    def __init__(self, onnx_file: str, data_preprocessor: Optional[dict] = None,
                 test_cfg: Optional[dict] = None, num_threads: Optional[int] = None,
                 init_cfg=None):
        self.onnx_file = onnx_file
        self.session = make_session(onnx_file, num_threads)
        self.meta = read_metadata(self.session)
        if self.meta.get('with_preprocess') and data_preprocessor is not None:
            # The graph normalises: the preprocessor only stacks (pads) the raw pixels.
            data_preprocessor = dict(data_preprocessor, mean=None, std=None, bgr_to_rgb=False,
                                     rgb_to_bgr=False)
        # BaseSegmentor's init (data preprocessor); EncoderDecoder's would build the network.
        BaseSegmentor.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from mmengine.config import ConfigDict
        self.test_cfg = ConfigDict(test_cfg or dict(mode='whole'))
        self.train_cfg = None
        self.num_classes = self.out_channels = int(self.meta['num_classes'])
        self.align_corners = bool(self.meta.get('align_corners', False))
        self.dataset_meta = dict(classes=tuple(self.meta['classes']),
                                 palette=self.meta['palette'])
        self._compiled = None
        self._input = self.session.get_inputs()[0].name
        sizes = self.meta.get('size_constraints') or {}
        self.fixed_size = None if sizes.get('dynamic', True) else (sizes['height'], sizes['width'])
        if self.test_cfg.get('amp') or self.test_cfg.get('compile'):
            raise ValueError('--amp/--compile do not apply to an ONNX model (the graph is fp32 '
                             'in onnxruntime).')

    @property
    def with_neck(self) -> bool:
        return False

    @property
    def with_auxiliary_head(self) -> bool:
        return False

    def extract_feat(self, inputs):
        raise NotImplementedError('ONNXRuntimeSegmentor: the features are inside the ONNX graph')

    def loss(self, inputs, data_samples):
        raise NotImplementedError(f'{self.onnx_file} is an exported model: inference only')

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        if self.fixed_size is not None and tuple(inputs.shape[-2:]) != tuple(self.fixed_size):
            h, w = self.fixed_size
            raise ExportError(
                f'{self.onnx_file} was exported for {h}x{w} inputs and got '
                f'{inputs.shape[-2]}x{inputs.shape[-1]}'
                + (f' ({batch_img_metas[0]["img_path"]})' if batch_img_metas
                   and 'img_path' in batch_img_metas[0] else '') +
                '. Use slide inference with crops of that size (test_cfg mode=slide, '
                f'crop_size=({h}, {w})' + (', or EoMT\'s windows, mode=windows' if h == w
                                           else '') +
                '), or re-export with --shape or --dynamic.')
        if self.meta.get('with_preprocess'):
            x = inputs.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        else:
            x = inputs.float()
        out = self.session.run(None, {self._input: x.cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(inputs.device)


def onnx_test_model(model_cfg, onnx_file: str, num_threads: Optional[int] = None) -> dict:
    """The ``model`` config that tests ``onnx_file`` in place of the config's network."""
    test_cfg = dict(model_cfg.get('test_cfg') or dict(mode='whole'))
    return dict(type='ONNXRuntimeSegmentor', onnx_file=onnx_file,
                data_preprocessor=model_cfg.get('data_preprocessor'), test_cfg=test_cfg,
                num_threads=num_threads)


def init_onnx_model(config, onnx_file: str, device: str = 'cpu'):
    """``mmseg.apis.init_model`` for an exported model: the config's test pipeline and
    preprocessing, the ONNX file's classes and palette (``inference_model`` works with it)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(onnx_test_model(cfg.model, onnx_file))
    model.cfg = cfg
    return model.to(device).eval()
