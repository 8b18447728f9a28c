"""Train a segmentor: mmseg 1.x's ``tools/train.py`` flags on ``PortableRunner``.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--seed 2023]
    bash dist_train.sh CONFIG GPUS [same flags]    # several processes (gloo without a GPU)
"""
import argparse
import logging
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmseg.registry import RUNNERS

import mmseg_custom  # noqa: F401 (registers models, datasets, PortableRunner, checkpoint loading)
from mmseg_custom.engine import CheckpointError, PortableRunner, close_process_group
from mmseg_custom.utils.preflight import preflight


def parse_args():
    """mmseg 1.x's train.py command line plus ``--resume CKPT``, ``--seed``, ``--deterministic``."""
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='CKPT',
        help='resume from CKPT, or without CKPT from the latest checkpoint in the work dir '
        '(training starts from scratch when there is none)')
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision training: bf16 autocast (CPU, and GPUs with bf16); '
                        'fp16 with dynamic loss scaling on GPUs without bf16 (V100, T4)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the training step (mmengine compile=True)')
    parser.add_argument('--seed', type=int, help='random seed (the ViT-Split runs used 2023)')
    parser.add_argument('--deterministic', action='store_true',
                        help='make cuDNN deterministic (slower)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs such as train_dataloader.batch_size=4; '
        'lists as key="[a,b]" or key=a,b, no white space')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_amp(cfg):
    """Switch ``cfg.optim_wrapper`` to mixed precision, saying which in one log line.

    bf16 autocast (``BF16OptimWrapper``) on the CPU and on GPUs with bf16; on GPUs without it
    (V100, T4: bf16 there is emulated or refused), fp16 autocast with dynamic loss scaling
    (mmengine's ``AmpOptimWrapper``), since fp16 gradients underflow without scaling.
    """
    if cfg.optim_wrapper.type in ('AmpOptimWrapper', 'BF16OptimWrapper'):
        print_log(f'Mixed precision is already enabled in the config ({cfg.optim_wrapper.type}).',
                  logger='current', level=logging.WARNING)
        return
    if cfg.optim_wrapper.type != 'OptimWrapper':
        raise ValueError('--amp needs optim_wrapper type OptimWrapper, '
                         f'got {cfg.optim_wrapper.type}')
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported(including_emulation=False):
        cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
        print_log(f'--amp: fp16 autocast with dynamic loss scaling (AmpOptimWrapper): '
                  f'{torch.cuda.get_device_name()} has no bf16.', logger='current')
    else:
        cfg.optim_wrapper.type = 'BF16OptimWrapper'
        print_log('--amp: bf16 autocast (BF16OptimWrapper), no loss scaling.', logger='current')


def main():
    """Build the runner from the config and the command line, log the total batch size, train."""
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
    if args.amp:
        enable_amp(cfg)
    if args.compile:
        cfg.compile = True
    if args.resume == 'auto':
        cfg.resume = 'auto'  # PortableRunner: the latest checkpoint here, else a fresh start
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.seed is not None or args.deterministic:
        randomness = {'seed': None, **cfg.get('randomness', {})}
        if args.seed is not None:
            randomness['seed'] = args.seed
        if args.deterministic:
            randomness['deterministic'] = True
        cfg.randomness = randomness

    preflight(cfg, splits=('train', 'val'))  # missing data or weights: one clear error, now
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else PortableRunner.from_cfg(cfg)
    batch, world = cfg.train_dataloader.batch_size, runner.world_size
    runner.logger.info(f'Total batch size: {world * batch} = {world} process{"es" * (world > 1)} '
                       f'x {batch} images per process')
    try:
        runner.train()
    except CheckpointError as err:  # a checkpoint that cannot be used: the message says why
        sys.exit(f'{type(err).__name__}: {err}')
    close_process_group()


if __name__ == '__main__':
    main()
