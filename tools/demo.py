"""Embedded demo: a tiny ViT-Split learns a synthetic segmentation data set on a CPU in minutes.

    python tools/demo.py [--trunk dinov2-pretrained|dinov2|dinov3] [--work-dir work_dirs/demo]
        [--data-root data/demo_shapes] [--iters N]
    python tools/demo.py --cts [--policy-iters N]   # with content-aware token sharing (30 %)
    python tools/demo.py --head eomt                 # ViT-Split-EoMT (EoMT's queries)

1. writes the synthetic shapes data set (background + circle, triangle, square, stripes, checker;
   random colours, so shape and texture decide) unless it is already there;
2. evaluates the untrained model, trains it with mmengine's Runner (default: the frozen tiny trunk
   pretrained on another synthetic task, ``configs/demo/vitsplit_tiny_shapes_pretrained.py``) and
   evaluates it with mmseg's test loop, which prints the per-class IoU table and the mIoU;
3. writes colour overlays of a few val predictions, the loss/mIoU curves and ``summary.json`` into
   the work dir. The checkpoint works with ``tools/image_demo.py``.

With ``--cts`` it first trains the CTS policy on the demo labels (``tools/train_cts_policy.py``),
then trains the model with 30 % of the tokens shared and reports the val mIoU of that model with
sharing at 0 (none), 15, 30 and 45 % reduction.

With ``--head eomt`` the model is ViT-Split-EoMT
(``configs/demo/vitsplit_eomt_tiny_shapes_pretrained.py``): the same frozen trunk, EoMT's queries
in the task head with masked attention (annealed away during training) and the Mask2Former set
loss; ``configs/demo/eomt_tiny_shapes_pretrained.py`` is the official EoMT on the same trunk, the
trunk fine-tuned (``--head eomt --config configs/demo/eomt_tiny_shapes_pretrained.py``).
"""
import argparse
import json
import os.path as osp
import time

import cv2
import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.runner import find_latest_checkpoint
from mmengine.utils import mkdir_or_exist

from mmseg_custom.datasets import generate_dataset
from mmseg_custom.engine import PortableRunner
from mmseg_custom.utils.malloc import keep_freed_memory
from mmseg_custom.utils.schedule import scale_schedule

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RANDOM_TRUNK_CONFIG = osp.join(REPO, 'configs', 'demo', 'vitsplit_tiny_shapes.py')
CTS_CONFIG = osp.join(REPO, 'configs', 'demo', 'vitsplit_tiny_shapes_cts.py')
CTS_REDUCTIONS = (0.0, 0.15, 0.3, 0.45)
TRUNK_CONFIGS = {  # the same demo on a tiny trunk of each family
    'dinov2': RANDOM_TRUNK_CONFIG,
    'dinov2-pretrained': osp.join(REPO, 'configs', 'demo', 'vitsplit_tiny_shapes_pretrained.py'),
    'dinov3': osp.join(REPO, 'configs', 'demo', 'vitsplit_tiny_shapes_dinov3.py'),
}
DEFAULT_TRUNK = 'dinov2-pretrained'
DEFAULT_CONFIG = TRUNK_CONFIGS[DEFAULT_TRUNK]
EOMT_CONFIG = osp.join(REPO, 'configs', 'demo', 'vitsplit_eomt_tiny_shapes_pretrained.py')
HEADS = ('linear', 'eomt')
# --head eomt: the trunks it runs on, as overrides of EOMT_CONFIG (the pretrained trunk's).
EOMT_TRUNKS = {
    'dinov2-pretrained': {},
    # random blocks, not pretrained ones, are copied into the task head: full lr, as the linear
    # demo on the random trunk (vitsplit_tiny_shapes.py)
    'dinov2': {'model.backbone.trunk.pretrained': None,
               'optim_wrapper.paramwise_cfg.custom_keys':
               {'backbone.task_head': dict(lr_mult=1.0)}},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train and evaluate a tiny ViT-Split on a synthetic data set (CPU, minutes).')
    parser.add_argument('--trunk', choices=sorted(TRUNK_CONFIGS), default=DEFAULT_TRUNK,
                        help='tiny frozen trunk: dinov2-pretrained (default; patch 14, '
                        'hand-written, pretrained on a synthetic pretext: assets/), dinov2 (the '
                        'same, random) or dinov3 (random, patch 16, RoPE, 4 storage tokens, '
                        'through timm)')
    parser.add_argument('--head', choices=HEADS, default='linear',
                        help='linear (default): ViT-Split with its linear head; eomt: '
                        'ViT-Split-EoMT, EoMT\'s queries in the task head (--trunk '
                        'dinov2-pretrained or dinov2)')
    parser.add_argument('--config', default=None, help='demo config file (default: the one '
                        'of --trunk and --head, or the CTS variant with --cts)')
    parser.add_argument('--cts', action='store_true',
                        help='content-aware token sharing: train the policy, then the model')
    parser.add_argument('--policy-iters', type=int, default=400,
                        help='policy training iterations with --cts (the paper runs 50k)')
    parser.add_argument('--policy-lr', type=float, default=1e-3,
                        help='policy lr with --cts: a random-init policy on a short schedule '
                        'needs more than the paper\'s 5e-5 (which starts from ImageNet weights)')
    parser.add_argument('--data-root', default='data/demo_shapes',
                        help='where the synthetic data set is written (reused if complete)')
    parser.add_argument('--work-dir', help='logs, checkpoint, overlays and curves go here '
                        '(default: work_dirs/demo, or work_dirs/demo_cts with --cts)')
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (the schedule is scaled to fit); '
                        'default: the config\'s')
    parser.add_argument('--num-train', type=int, default=2000, help='training images')
    parser.add_argument('--num-val', type=int, default=200, help='validation images')
    parser.add_argument('--num-overlays', type=int, default=6,
                        help='val images to draw predictions for')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_dataloader.batch_size=16')
    args = parser.parse_args(argv)
    if args.head == 'eomt':
        if args.cts:
            parser.error('--cts with --head eomt: token sharing is not implemented for the EoMT '
                         'encoders (run --cts with --head linear, or --head eomt without --cts)')
        if args.trunk not in EOMT_TRUNKS:
            parser.error(f'--head eomt runs on --trunk {" or ".join(EOMT_TRUNKS)}; there is no '
                         f'EoMT demo config for --trunk {args.trunk}')
        if args.config is not None and args.trunk != DEFAULT_TRUNK:
            parser.error(f'--head eomt --trunk {args.trunk} adapts the default EoMT demo config; '
                         f'--config {args.config} sets its own trunk: give one of the two')
    if args.config is None:
        if args.cts:
            args.config = CTS_CONFIG
        else:
            args.config = EOMT_CONFIG if args.head == 'eomt' else TRUNK_CONFIGS[args.trunk]
    if args.work_dir is None:
        args.work_dir = ('work_dirs/demo_cts' if args.cts else
                         'work_dirs/demo_eomt' if args.head == 'eomt' else 'work_dirs/demo')
    return args


def build_config(args):
    cfg = Config.fromfile(args.config)
    cfg.work_dir = args.work_dir
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = args.data_root
    if args.head == 'eomt':  # parse_args allows another --trunk with the default config only
        cfg.merge_from_dict(EOMT_TRUNKS[args.trunk])
    if args.iters is not None:
        scale_schedule(cfg, args.iters)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


class ValidateBeforeTraining(Hook):
    """Validate the initialised, untrained model once, so the mIoU curve starts at iteration 0."""
    priority = 'LOWEST'

    def __init__(self):
        self.metrics = None

    def before_train(self, runner):
        self.metrics = runner.val_loop.run()


def colorize(image, label, palette, alpha=0.6):
    """Blend class colours into an RGB image; background (class 0) is left as it is."""
    colour = palette[label].astype(np.float32)
    mixed = (1 - alpha) * image.astype(np.float32) + alpha * colour
    return np.where((label > 0)[..., None], mixed, image).astype(np.uint8)


def text_strip(labels, width, scale, swatches=None):
    """A white strip with the labels spread evenly, each after a colour swatch if given."""
    height = 14 * scale
    strip = np.full((height, width, 3), 255, np.uint8)
    step = width // len(labels)
    for i, label in enumerate(labels):
        x = i * step + 2 * scale
        if swatches is not None:
            colour = tuple(int(c) for c in swatches[i])
            cv2.rectangle(strip, (x, 3 * scale), (x + 8 * scale, 11 * scale), colour, -1)
            cv2.rectangle(strip, (x, 3 * scale), (x + 8 * scale, 11 * scale), (0, 0, 0), 1)
            x += 10 * scale
        cv2.putText(strip, label, (x, 10 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.14 * scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def write_overlays(runner, out_dir, num, scale=3):
    """Draw image | ground truth | prediction for the first ``num`` val images into ``out_dir``."""
    dataset = runner.test_dataloader.dataset
    classes = dataset.metainfo['classes']
    palette = np.asarray(dataset.metainfo['palette'], np.uint8)
    model = runner.model
    model.eval()
    paths = []
    with torch.no_grad():
        for i in range(min(num, len(dataset))):
            result = model.test_step(pseudo_collate([dataset[i]]))[0]
            image = cv2.cvtColor(cv2.imread(result.img_path), cv2.COLOR_BGR2RGB)
            gt = result.gt_sem_seg.data[0].cpu().numpy()
            pred = result.pred_sem_seg.data[0].cpu().numpy()
            gt = np.where(gt == 255, 0, gt)  # ignore index has no colour
            panel = np.concatenate(
                [image, colorize(image, gt, palette), colorize(image, pred, palette)], axis=1)
            panel = cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            width = panel.shape[1]
            panel = np.concatenate([
                text_strip(['image', 'ground truth', 'prediction'], width, scale), panel,
                text_strip(classes, width, scale, swatches=palette)])
            path = osp.join(out_dir, f'val_{osp.splitext(osp.basename(result.img_path))[0]}.png')
            cv2.imwrite(path, cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
            paths.append(path)
    return paths


def read_scalars(path):
    """Training loss and val mIoU series from a LocalVisBackend ``scalars.json``."""
    loss, miou = [], []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if 'loss' in record:
                loss.append((record['step'], record['loss']))
            if 'mIoU' in record:
                miou.append((record['step'], record['mIoU']))
    return loss, miou


def plot_curves(loss, miou, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 4))
    if loss:
        ax_loss.plot(*zip(*loss), color='tab:blue')
    ax_loss.set(title='training loss', xlabel='iteration', ylabel='loss')
    ax_loss.set_yscale('log')
    if miou:
        ax_miou.plot(*zip(*miou), marker='o', color='tab:green')
    ax_miou.set(title='val mIoU', xlabel='iteration', ylabel='mIoU (%)', ylim=(0, 100))
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_demo_policy(cfg, args):
    """Train the CTS policy on the demo's train labels, where the config expects it."""
    from mmseg_custom.engine.policy_training import train_policy
    path = osp.join(cfg.work_dir, 'policy.pth')
    cfg.model.backbone.token_sharing.policy.pretrained = path
    train_policy(args.config, path, iters=args.policy_iters, lr=args.policy_lr,
                 val_images=args.num_val, log_interval=50,
                 cfg_options={'train_dataloader.dataset.data_root': args.data_root,
                              'val_dataloader.dataset.data_root': args.data_root})


def evaluate_reductions(runner):
    """Val mIoU of the trained model with each token reduction (0: no sharing)."""
    sharing = runner.model.backbone.token_sharing
    trained_with = sharing.reduction
    results = {}
    for reduction in CTS_REDUCTIONS:
        sharing.reduction = reduction
        results[reduction] = runner.test()['mIoU']
    sharing.reduction = trained_with
    return results


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keep_freed_memory()  # CPU training: no page faults on every step's activations
    generate_dataset(args.data_root, num_train=args.num_train, num_val=args.num_val)
    cfg = build_config(args)
    if args.cts:
        train_demo_policy(cfg, args)
    runner = PortableRunner.from_cfg(cfg)  # a checkpoint save killed midway loses nothing
    batch = cfg.train_dataloader.batch_size
    runner.logger.info(f'Total batch size {batch} (1 process x {batch}), '
                       f'{cfg.train_cfg.max_iters} iterations, {torch.get_num_threads()} threads')

    untrained = ValidateBeforeTraining()
    runner.register_hook(untrained)
    runner.train()
    before = untrained.metrics
    after = runner.test()  # mmseg's test loop: IoUMetric logs the per-class table
    cts = evaluate_reductions(runner) if args.cts else None

    overlay_dir = osp.join(cfg.work_dir, 'overlays')
    mkdir_or_exist(overlay_dir)
    overlays = write_overlays(runner, overlay_dir, args.num_overlays)
    loss, miou = read_scalars(osp.join(runner.log_dir, 'vis_data', 'scalars.json'))
    curves = osp.join(cfg.work_dir, 'curves.png')
    plot_curves(loss, miou, curves)

    checkpoint = find_latest_checkpoint(cfg.work_dir)
    config_dump = osp.join(cfg.work_dir, osp.basename(args.config))
    summary = dict(
        mIoU=after['mIoU'], mIoU_before=before['mIoU'], aAcc=after['aAcc'],
        head=args.head, iters=cfg.train_cfg.max_iters, seconds=round(time.time() - start, 1),
        checkpoint=checkpoint, config=config_dump, overlays=overlays, curves=curves,
        loss=loss, val_mIoU=miou)
    if cts:
        summary['cts_mIoU_by_reduction'] = cts
    with open(osp.join(cfg.work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)

    minutes, seconds = divmod(int(summary['seconds']), 60)
    print(f'\nDemo finished in {minutes}m{seconds:02d}s: mIoU {after["mIoU"]:.1f}% on '
          f'{len(runner.test_dataloader.dataset)} val images (untrained model: '
          f'{before["mIoU"]:.1f}%).')
    if cts:
        print('  CTS mIoU by token reduction: ' + ', '.join(
            f'{int(100 * r)} % -> {m:.1f}' for r, m in cts.items()))
    print(f'  overlays   : {overlay_dir}/ ({len(overlays)} files: image | truth | prediction)')
    print(f'  curves     : {curves}')
    print(f'  checkpoint : {checkpoint}')
    print(f'  log        : {runner.log_dir}')
    print(f'Segment your own image:\n  python tools/image_demo.py {config_dump} {checkpoint} '
          f'{osp.join(args.data_root, "img_dir", "val", "00000.png")} --out overlay.png')
    return summary


if __name__ == '__main__':
    main()
