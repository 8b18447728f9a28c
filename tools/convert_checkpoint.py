"""Convert a checkpoint of the original ViT-Split code (mmseg 0.x keys) to this build's keys.

    python tools/convert_checkpoint.py ORIGINAL.pth CONVERTED.pth

Not required: ``init_model``/``load_from`` convert original checkpoints at load time. This writes a
converted copy (state_dict and meta only), atomically.
"""
import argparse
import os.path as osp

import torch

from mmseg_custom.engine import CheckpointError, load_from_local
from mmseg_custom.models.backbones.vit_split import convert_original_keys
from mmseg_custom.utils import atomic_write


def convert(src: str, dst: str):
    """Convert ``src`` into ``dst``; a problem with either stops with one message, before work."""
    folder = osp.dirname(osp.abspath(dst))
    if not osp.isdir(folder):
        raise SystemExit(f'Output folder {folder} does not exist: create it (mkdir -p {folder}) '
                         'or choose another output path.')
    try:
        ckpt = load_from_local(src, map_location='cpu')  # the loader of train/test/demo
    except (CheckpointError, FileNotFoundError) as err:
        raise SystemExit(f'{type(err).__name__}: {err}') from None
    state_dict = ckpt.get('state_dict', ckpt)
    dropped = convert_original_keys(state_dict, 'backbone.')
    out = dict(state_dict=state_dict, meta=dict(ckpt.get('meta', {}), converted_from=src))
    with atomic_write(dst) as f:
        torch.save(out, f)
    print(f'wrote {dst}: {len(state_dict)} tensors'
          + (f'; dropped the unused {", ".join(dropped)}' if dropped else ''))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint in the original layout')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    args = parser.parse_args()
    convert(args.src, args.dst)


if __name__ == '__main__':
    main()
