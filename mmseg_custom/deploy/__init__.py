"""Deployment: ONNX export of a segmentor's whole-image inference and an ONNX Runtime segmentor.

``import mmseg_custom`` does not import this package, and this package imports ``onnx`` and
``onnxruntime`` only when a function that needs them is first used, so a training install
without them keeps working.

* :func:`export_onnx` (``tools/export.py``): the segmentor's ``encode_decode`` (backbone, neck,
  decode head, resize to the input size) as one ONNX graph of standard ops, checked against eager
  PyTorch before it is moved to its target name.
* :class:`ONNXRuntimeSegmentor` (``tools/test.py CONFIG model.onnx``, ``tools/image_demo.py``): an
  mmseg segmentor whose network is an ONNX Runtime session; slide inference, the data
  preprocessor and the post-processing stay mmseg's.
"""

_LAZY = {
    'ExportError': 'export',
    'SegmentorGraph': 'export',
    'build_segmentor': 'export',
    'export_onnx': 'export',
    'check_family': 'export',
    'compare_with_pytorch': 'export',
    'ONNXRuntimeSegmentor': 'ort_segmentor',
    'init_onnx_model': 'ort_segmentor',
    'onnx_test_model': 'ort_segmentor',
    'read_metadata': 'ort_segmentor',
    'make_session': 'ort_segmentor',
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = importlib.import_module(f'{__name__}.{_LAZY[name]}')
        return getattr(module, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
