"""Test (and evaluate) a segmentor: mmseg 1.x's ``tools/test.py`` flags on ``PortableRunner``.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR] [--show-dir DIR] [--tta]
    python tools/test.py CONFIG model.onnx [...]   # a model exported by tools/export.py
    bash dist_test.sh CONFIG CHECKPOINT GPUS [same flags]
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmseg.registry import RUNNERS

import mmseg_custom  # noqa: F401 (registers models, datasets, PortableRunner, checkpoint loading)
from mmseg_custom.engine import CheckpointError, PortableRunner, close_process_group
from mmseg_custom.utils.preflight import preflight


def parse_args():
    """Command line of mmseg 1.x's test.py."""
    parser = argparse.ArgumentParser(description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file, or an ONNX file of tools/export.py')
    parser.add_argument('--work-dir', help='the dir to save logs and the evaluation metrics')
    parser.add_argument('--out', help='directory to save predictions to, for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory to save painted predictions to')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs such as test_dataloader.batch_size=4; '
        'lists as key="[a,b]" or key=a,b, no white space')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--tta', action='store_true', help='test time augmentation')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast inference')
    parser.add_argument('--compile', action='store_true', help='torch.compile the network')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_visualization(cfg, args):
    """Turn on the ``visualization`` default hook for ``--show`` / ``--show-dir``."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise RuntimeError('--show and --show-dir need default_hooks.visualization, e.g. '
                           "visualization=dict(type='SegVisualizationHook')")
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir


def main():
    """Build the runner from the config and the command line and test the checkpoint."""
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    # work_dir: command line, else config, else ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.amp or args.compile:
        if cfg.model.type != 'BatchedSlideEncoderDecoder':
            raise ValueError('--amp/--compile need model.type BatchedSlideEncoderDecoder '
                             f'(the segmentor of our configs), got {cfg.model.type}')
        cfg.model.test_cfg.update(amp=args.amp, compile=args.compile)
    if args.checkpoint.endswith('.onnx'):  # an exported model (tools/export.py): onnxruntime
        from mmseg_custom.deploy import onnx_test_model
        cfg.model, cfg.load_from = onnx_test_model(cfg.model, args.checkpoint), None
    if args.tta:
        if 'tta_pipeline' not in cfg or 'pipeline' not in cfg.test_dataloader.dataset:
            sys.exit(f'--tta: {args.config} has no single test pipeline to augment (a test set '
                     'of several domains, as in the Rein configs, is tested per domain at its own '
                     'scale). Test without --tta, or give the config one test dataset and a '
                     'tta_pipeline (see configs/_base_/datasets/ade20k_512.py).')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    preflight(cfg, splits=('test', ), weights=False)  # the checkpoint brings the weights
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else PortableRunner.from_cfg(cfg)
    try:
        runner.test()  # PortableRunner refuses a checkpoint that does not fit the model
    except CheckpointError as err:
        sys.exit(f'{type(err).__name__}: {err}')
    close_process_group()


if __name__ == '__main__':
    main()
