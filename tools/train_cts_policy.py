"""Train the CTS policy network (EfficientNet-Lite0) on the labels of a dataset config.

    python tools/train_cts_policy.py CONFIG --out POLICY.pth [--iters 50000] [--batch 8]
        [--lr 5e-5] [--weight-decay 1e-3] [--pretrained EFFNET.pth] [--device cpu|cuda]
        [--seed 0] [--save-interval 1000]

CONFIG is any segmentor config of this repository (its train set, pipeline, data preprocessor and
trunk patch size are used). A superpatch (2x2 trunk patches: 28 px for patch 14) is a positive
when all its labelled pixels (label != 255) share one class. The defaults are the CTS paper's
recipe; ``--pretrained`` initialises the EfficientNet from local timm ImageNet weights (the paper
starts from them; nothing is downloaded). Put the written file where the CTS config's
``model.backbone.token_sharing.policy.pretrained`` points. The file is (re)written atomically
every ``--save-interval`` iterations and at the end, so a killed run leaves the last one (its
``meta['iter']`` says after how many iterations).
"""
import argparse

import torch
from mmengine.config import DictAction

import mmseg_custom  # noqa: F401 (registers models and datasets)
from mmseg_custom.engine.policy_training import train_policy


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not a positive number')
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--out', required=True, help='policy checkpoint (file) to write')
    parser.add_argument('--iters', type=positive_int, default=50000)
    parser.add_argument('--batch', type=positive_int, default=8)
    parser.add_argument('--lr', type=float, default=5e-5)
    parser.add_argument('--weight-decay', type=float, default=1e-3)
    parser.add_argument('--pretrained', help='local timm efficientnet_lite0 (or policy) weights')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--workers', type=int, default=0, help='data loader processes')
    parser.add_argument('--val-images', type=int, default=100,
                        help='val images for the final superpatch accuracy (0: none)')
    parser.add_argument('--log-interval', type=positive_int, default=100)
    parser.add_argument('--save-interval', type=positive_int, default=1000,
                        help='write the policy every N iterations too (a killed run keeps it)')
    parser.add_argument('--seed', type=int, default=0,
                        help='random seed (policy init, data order, augmentation)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_dataloader.dataset.data_root=X')
    args = parser.parse_args(argv)
    return train_policy(args.config, args.out, iters=args.iters, batch_size=args.batch,
                        lr=args.lr, weight_decay=args.weight_decay, pretrained=args.pretrained,
                        device=args.device, num_workers=args.workers,
                        val_images=args.val_images, log_interval=args.log_interval,
                        cfg_options=args.cfg_options, seed=args.seed,
                        save_interval=args.save_interval)


if __name__ == '__main__':
    main()
