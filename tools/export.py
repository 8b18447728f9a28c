"""Export a trained segmentor to ONNX: one file that onnxruntime runs without PyTorch or mmseg.

    python tools/export.py CONFIG CHECKPOINT --out model.onnx [--shape H W] [--dynamic]
        [--opset N] [--with-preprocess]

The graph is the segmentor's whole-image inference (``encode_decode``: backbone, decode head,
logits resized to the input size; for EoMT its blocks with the queries and the semantic scores),
standard ONNX ops only; slide inference and EoMT's evaluation windows stay outside it (run the
crops through the session, as ``tools/test.py CONFIG model.onnx`` does). The file is
checked against eager PyTorch with onnxruntime before it is written (``--no-verify`` skips
that), through a temporary name beside ``--out``. See docs/deploy.md.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a segmentor to ONNX (see docs/deploy.md)')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file (must fit the config exactly)')
    parser.add_argument('--out', required=True, help='ONNX file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the slide crop or EoMT window of the '
                        'config\'s test_cfg, else its data preprocessor size)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic height and width (linear-head and EoMT families; the '
                        'batch is always dynamic)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (>= 16; default 17)')
    parser.add_argument('--with-preprocess', action='store_true',
                        help='normalisation (and BGR->RGB) in the graph: the input is raw uint8 '
                        'images (B, H, W, 3)')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the onnxruntime-vs-PyTorch check before writing')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmseg_custom.deploy.export import (ExportError, build_segmentor, default_shape,
                                            export_onnx)
    from mmseg_custom.engine import CheckpointError

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    try:
        model, dataset_meta = build_segmentor(cfg, args.checkpoint)
        shape = tuple(args.shape) if args.shape else default_shape(cfg)
        pre = cfg.model.get('data_preprocessor', {})
        report = export_onnx(
            model, args.out, shape, dynamic=args.dynamic, opset=args.opset,
            with_preprocess=args.with_preprocess,
            preprocess=dict(mean=pre.get('mean'), std=pre.get('std'),
                            bgr_to_rgb=pre.get('bgr_to_rgb', False)),
            dataset_meta=dataset_meta, config_name=osp.basename(args.config),
            test_cfg=cfg.model.get('test_cfg'), verify=not args.no_verify)
    except (ExportError, CheckpointError, FileNotFoundError) as err:
        sys.exit(f'{type(err).__name__}: {err}')
    size = 'dynamic H, W' if report['dynamic'] else f'{shape[0]}x{shape[1]}'
    print(f'Exported {report["family"]} ({size}, opset {report["opset"]}, input '
          f'{report["input"]!r}) in {report["seconds"]:.1f} s to {args.out}')
    for check in report['checks']:
        print(f'  onnxruntime vs PyTorch, input {tuple(check["shape"])}: max abs logit error '
              f'{check["max_abs_err"]:.2e} (largest logit {check["max_abs_logit"]:.2f}), argmax '
              f'agreement {100 * check["argmax_agreement"]:.3f} %')
    return report


if __name__ == '__main__':
    main()
