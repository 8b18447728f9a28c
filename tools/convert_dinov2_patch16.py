"""Convert DINOv2 weights to another patch size and position grid, as Rein's conversion does.

    python tools/convert_dinov2_patch16.py dinov2_vitl14_pretrain.pth dinov2_vitl16_512.pth
    python tools/convert_dinov2_patch16.py IN OUT --patch-size 16 --img-size 1024

The patch embedding kernel is resampled to ``--patch-size`` and the position embedding to the
grid of ``--img-size`` (bicubic), as Rein's ``convert_dinov2_large_512x512.py`` (which this
generalises to every size and any layout ``mmseg_custom`` reads: official, timm, Hugging Face).
A trunk configured with ``patch_size=16, img_size=512`` does the same at load time from the
unconverted file; this tool writes the converted file once (official DINOv2 key layout).
"""
import argparse

import torch

from mmseg_custom.models.patch_resample import resample_patch_and_grid
from mmseg_custom.models.weights import read_state_dict, to_official_layout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='DINOv2 weights (.pth/.bin/.safetensors)')
    parser.add_argument('dst', help='output .pth (official DINOv2 layout)')
    parser.add_argument('--patch-size', type=int, default=16)
    parser.add_argument('--img-size', type=int, default=512)
    args = parser.parse_args()
    grid = args.img_size // args.patch_size
    sd = resample_patch_and_grid(to_official_layout(read_state_dict(args.src)), args.patch_size,
                                 grid * grid)
    torch.save(sd, args.dst)
    print(f'{args.dst}: patch {args.patch_size}, position grid {grid} x {grid}, '
          f'{len(sd)} tensors')


if __name__ == '__main__':
    main()
