"""Missing datasets and weights stop the launchers before any work, with the path and the fix."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmseg_custom.utils.preflight import preflight

CONFIG = 'configs/ade20k/vitsplit/linear_dinov2_vitsplit_small_512_20k_ade20k.py'


def test_train_without_dataset_fails_before_any_work(repo_dir, tmp_path):
    work = tmp_path / 'work'
    proc = subprocess.run([sys.executable, osp.join(repo_dir, 'tools/train.py'),
                           osp.join(repo_dir, CONFIG), '--work-dir', str(work)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'Dataset not found: data/ade/ADEChallengeData2016/images/training' in proc.stderr
    assert 'dataset_prepare' in proc.stderr and 'data_root' in proc.stderr
    assert not work.exists(), 'nothing may be written before the check'


def test_missing_weights_error_names_url_and_place(repo_dir, tmp_path, monkeypatch):
    cfg = Config.fromfile(osp.join(repo_dir, CONFIG))
    for split in ('train', 'val'):
        ds = cfg[f'{split}_dataloader'].dataset
        ds.data_root = str(tmp_path)
        for p in ds.data_prefix.values():
            os.makedirs(tmp_path / p, exist_ok=True)
        # One image and its label: a split that lists nothing is refused before the weights.
        Image.new('RGB', (8, 8)).save(tmp_path / ds.data_prefix.img_path / '0.jpg')
        Image.new('L', (8, 8)).save(tmp_path / ds.data_prefix.seg_map_path / '0.png')
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def offline(*args, **kwargs):
        raise OSError('Network is unreachable')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(FileNotFoundError, match='dinov2_vits14_pretrain.pth') as e:
        preflight(cfg, splits=('train', 'val'))
    assert str(tmp_path / 'hub' / 'checkpoints') in str(e.value)


def test_each_trunk_resolves_its_own_weights(repo_dir, tmp_path, monkeypatch):
    """A DINOv3 (timm) config: preflight asks the TimmViT trunk, whose error names Meta's file,
    the Hugging Face repos and where to put them; once the file is there, preflight passes."""
    cfg = Config.fromfile(osp.join(
        repo_dir, 'configs/ade20k/vitsplit/linear_dinov3_vitsplit_small_512_40k_ade20k.py'))
    for split in ('train', 'val'):
        ds = cfg[f'{split}_dataloader'].dataset
        ds.data_root = str(tmp_path)
        for p in ds.data_prefix.values():
            os.makedirs(tmp_path / p, exist_ok=True)
        # One image and its label: a split that lists nothing is refused before the weights.
        Image.new('RGB', (8, 8)).save(tmp_path / ds.data_prefix.img_path / '0.jpg')
        Image.new('L', (8, 8)).save(tmp_path / ds.data_prefix.seg_map_path / '0.png')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hf'))
    meta = (tmp_path / 'torch' / 'hub' / 'checkpoints' /
            'dinov3_vits16_pretrain_lvd1689m-08c60483.pth')
    with pytest.raises(FileNotFoundError, match='facebook/dinov3-vits16-pretrain-lvd1689m') as e:
        preflight(cfg, splits=('train', 'val'))
    assert str(meta) in str(e.value) and 'timm/vit_small_patch16_dinov3.lvd1689m' in str(e.value)
    meta.parent.mkdir(parents=True)
    meta.write_bytes(b'')
    preflight(cfg, splits=('train', 'val'))
