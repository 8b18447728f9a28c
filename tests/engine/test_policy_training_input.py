"""CTS policy training: the policy trains on its own normalisation (the official (x - 127.5) /
127.5 by default), not the data preprocessor's, and the written file states what it was trained
for, so that a segmentor whose config contradicts it refuses it."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmseg.registry import MODELS
from PIL import Image

import mmseg_custom  # noqa: F401
from mmseg_custom.engine.policy_training import train_policy

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'demo', 'vitsplit_tiny_shapes_cts.py')
RGB = (200, 100, 50)


def write_plain_colour_data(root, size=56, count=2):
    """Images of one colour (so flips and resizing leave every pixel as it is), mmseg layout."""
    for split in ('train', 'val'):
        os.makedirs(osp.join(root, 'img_dir', split))
        os.makedirs(osp.join(root, 'ann_dir', split))
        for i in range(count):
            img = np.broadcast_to(np.array(RGB, np.uint8), (size, size, 3))
            label = np.ones((size, size), np.uint8)
            label[:, size // 2:] = 2
            Image.fromarray(np.ascontiguousarray(img)).save(
                osp.join(root, 'img_dir', split, f'{i}.png'))
            Image.fromarray(label).save(osp.join(root, 'ann_dir', split, f'{i}.png'))


def options(root, **extra):
    opts = {}
    for split in ('train', 'val'):
        key = f'{split}_dataloader.dataset.'
        opts.update({key + 'type': 'BaseSegDataset', key + 'data_root': str(root),
                     key + 'img_suffix': '.png', key + 'seg_map_suffix': '.png'})
    opts.update(extra)
    return opts


def test_policy_trains_on_the_official_input_and_records_it(tmp_path, monkeypatch):
    from mmseg_custom.models.backbones.token_sharing import CTSPolicyNet
    write_plain_colour_data(tmp_path / 'data')
    seen = []
    forward = CTSPolicyNet.forward
    monkeypatch.setattr(CTSPolicyNet, 'forward',
                        lambda self, x: seen.append(x.detach().clone()) or forward(self, x))
    out = tmp_path / 'policy.pth'
    train_policy(CONFIG, str(out), iters=1, batch_size=2, val_images=1,
                 cfg_options=options(tmp_path / 'data'), log=lambda *a: None)
    # The demo config: 224 px images (16x16 patches of 14 px), 8x8 superpatches shown as 32 px.
    official = (torch.tensor(RGB, dtype=torch.float) - 127.5) / 127.5  # RGB order
    assert [tuple(x.shape) for x in seen] == [(2, 3, 256, 256), (1, 3, 256, 256)]
    for x in seen:  # training batch, then the val image
        torch.testing.assert_close(x, official.view(1, 3, 1, 1).expand_as(x), atol=1e-5,
                                   rtol=0)
    meta = torch.load(out, weights_only=True)['meta']
    assert meta['mean'] == meta['std'] == [127.5] * 3
    assert meta['patch_size'] == 14 and meta['superpatch_px'] == 32
    # The demo CTS config loads it (its policy settings are the official defaults).
    sharing_cfg = dict(type='TokenSharing', input_mean=[123.675, 116.28, 103.53],
                       input_std=[58.395, 57.12, 57.375],
                       policy=dict(type='CTSPolicyNet', pretrained=str(out)))
    sharing = MODELS.build(sharing_cfg)
    sharing.init_weights()
    assert sharing.policy.trained_patch_size == 14


def test_policy_with_its_own_normalisation_records_it(tmp_path):
    write_plain_colour_data(tmp_path / 'data')
    out = tmp_path / 'policy.pth'
    own = {'model.backbone.token_sharing.policy.mean': [0.0, 0.0, 0.0],
           'model.backbone.token_sharing.policy.std': [255.0, 255.0, 255.0]}
    train_policy(CONFIG, str(out), iters=1, batch_size=2, val_images=0,
                 cfg_options=options(tmp_path / 'data', **own), log=lambda *a: None)
    meta = torch.load(out, weights_only=True)['meta']
    assert meta['mean'] == [0.0] * 3 and meta['std'] == [255.0] * 3
    default = MODELS.build(dict(type='CTSPolicyNet', pretrained=str(out)))
    with pytest.raises(ValueError, match=f'{out} was trained with mean'):
        default.init_weights()


def test_config_whose_input_normalisation_is_not_its_preprocessors_is_refused(tmp_path):
    write_plain_colour_data(tmp_path / 'data')
    wrong = {'model.backbone.token_sharing.input_mean': [0.0, 0.0, 0.0]}
    with pytest.raises(ValueError, match=r'token_sharing.input_mean is \[0.0, 0.0, 0.0\], but the '
                                         'data preprocessor normalises with'):
        train_policy(CONFIG, str(tmp_path / 'p.pth'), iters=1, batch_size=2, val_images=0,
                     cfg_options=options(tmp_path / 'data', **wrong), log=lambda *a: None)
