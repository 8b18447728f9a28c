"""A checkpoint in the original layout gives the original code's logits through init_model."""
import os.path as osp
import subprocess
import sys

import torch
from mmseg.apis import init_model

CONFIG = 'configs/ade20k/vitsplit/linear_dinov2_vitsplit_small_512_20k_ade20k.py'


def test_original_checkpoint_gives_original_logits(fixtures_dir, repo_dir, tmp_path):
    ckpt = tmp_path / 'vitsplit_small_ade20k_original.pth'
    subprocess.run([sys.executable, osp.join(fixtures_dir, 'make_reference_checkpoint.py'),
                    osp.join(fixtures_dir, 'vitsplit_small_ade20k.keys.json'), str(ckpt)],
                   check=True)
    golden = torch.load(osp.join(fixtures_dir, 'vitsplit_small_ade20k.golden.pt'),
                        weights_only=True)
    model = init_model(osp.join(repo_dir, CONFIG), str(ckpt), device='cpu')
    model.eval()
    assert len(golden['inputs']) >= 2
    with torch.no_grad():
        for x, expected in zip(golden['inputs'], golden['outputs']):
            out = model(x, mode='tensor')
            assert out.shape == expected.shape
            err = (out - expected).abs().max().item()
            assert err < 1e-4, f'input {tuple(x.shape)}: max abs error {err:.2e}'
