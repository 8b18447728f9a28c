"""Segment one image with a trained model and write a colour overlay of the prediction.

    python tools/image_demo.py CONFIG CHECKPOINT IMAGE --out overlay.png [--device cpu]

e.g. after ``tools/demo.py``::

    python tools/image_demo.py work_dirs/demo/vitsplit_tiny_shapes.py \\
        work_dirs/demo/iter_2000.pth data/demo_shapes/img_dir/val/00000.png --out overlay.png
"""
import argparse
import sys

import mmcv
import numpy as np
import torch
from mmengine.model import revert_sync_batchnorm
from mmseg.apis import inference_model, init_model
from mmseg.visualization import SegLocalVisualizer

from mmseg_custom.engine import CheckpointError, load_checkpoint_exactly


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Segment one image and write an overlay.')
    parser.add_argument('config', help='model config file (the one in the work dir works)')
    parser.add_argument('checkpoint', help='checkpoint file, or an ONNX file of tools/export.py')
    parser.add_argument('img', help='image file')
    parser.add_argument('--out', default='overlay.png', help='overlay to write')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu',
                        help='device, e.g. cpu or cuda:0')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='opacity of the class colours, in (0, 1]')
    parser.add_argument('--no-labels', action='store_true',
                        help='do not write class names on the overlay')
    return parser.parse_args(argv)


def dataset_meta(checkpoint, num_classes):
    """Class names and palette from the checkpoint's meta (mmseg 1.x, or 0.x's CLASSES/PALETTE);
    numbered classes with a fixed palette when it has none."""
    meta = checkpoint.get('meta', {})
    if 'dataset_meta' in meta:
        return meta['dataset_meta']
    if 'CLASSES' in meta:
        return dict(classes=meta['CLASSES'], palette=meta['PALETTE'])
    palette = np.random.RandomState(0).randint(0, 256, (num_classes, 3)).tolist()
    return dict(classes=tuple(f'class {i}' for i in range(num_classes)), palette=palette)


def load_model(config, checkpoint, device):
    """The model of ``config`` with the weights of ``checkpoint``, which must fit it exactly.

    mmseg's ``init_model`` loads what fits and only warns about the rest: a checkpoint of another
    class count would give predictions from a random head. An ``.onnx`` file (tools/export.py)
    runs in onnxruntime.
    """
    if str(checkpoint).endswith('.onnx'):
        from mmseg_custom.deploy import init_onnx_model
        return init_onnx_model(config, checkpoint, device)
    model = init_model(config, None, device=device)
    ckpt = load_checkpoint_exactly(model, checkpoint)
    model.dataset_meta = dataset_meta(ckpt, model.decode_head.num_classes)
    if not str(device).startswith('cuda'):
        model = revert_sync_batchnorm(model)  # as mmseg's demo: SyncBN needs CUDA
    return model


def check_image(path):
    """Raise, naming the file, for an image that cannot be read or is a single pixel (mmseg's
    visualizer indexes with a one-element prediction and fails after inference)."""
    image = mmcv.imread(path)  # None where the file is no image
    if image is None:
        raise ValueError(f'{path} is not an image file that OpenCV can read (PNG, JPEG, ...).')
    if image.shape[0] * image.shape[1] < 2:
        raise ValueError(f'{path} is {image.shape[1]}x{image.shape[0]} px: one pixel holds '
                         'nothing to segment. Give an image of at least 2 pixels (a crop of the '
                         'scene, not a thumbnail).')


def main(argv=None):
    args = parse_args(argv)
    check_image(args.img)
    try:
        model = load_model(args.config, args.checkpoint, args.device)
    except (CheckpointError, FileNotFoundError) as err:
        sys.exit(f'{type(err).__name__}: {err}')
    # Pass the file path, not an array: mmseg reads it as BGR itself, and the model's test
    # pipeline stays the file-loading one (an array call rewrites it; later path calls then fail).
    result = inference_model(model, args.img)
    visualizer = SegLocalVisualizer(alpha=args.opacity)
    # Set after construction: mmseg 1.2's constructor swaps its classes and palette arguments.
    visualizer.dataset_meta = dict(classes=model.dataset_meta['classes'],
                                   palette=model.dataset_meta['palette'])
    visualizer.add_datasample('prediction', mmcv.imread(args.img, channel_order='rgb'), result,
                              draw_gt=False, out_file=args.out, with_labels=not args.no_labels)
    print(f'Overlay written to {args.out}')
    return result


if __name__ == '__main__':
    main()
