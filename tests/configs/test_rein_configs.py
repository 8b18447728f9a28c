"""Every Rein / PEFT config is what its name says, trains one tiny step on the CPU, and its
optimizer applies the recipe it states (Rein's own, or ViT-Split's for like-for-like runs)."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from tiny_models import tiny_config
from torch import nn

import mmseg_custom  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(osp.relpath(p, osp.join(REPO, 'configs')) for pattern in ('rein', 'peft')
                 for p in glob.glob(osp.join(REPO, 'configs', '*', pattern, '*.py')))
NAME = re.compile(r'(?P<head>linear|mask2former)_(?P<trunk>dinov2|dinov3)_'
                  r'(?P<method>rein|lora|adaptformer|vpt|frozen)_(?P<size>small|base|large)_'
                  r'(?P<crop>\d+)_(?P<iters>\d+)k_(?P<data>ade20k|gtav|citys2acdc)'
                  r'(?P<rein_recipe>_rein_recipe)?\.py')
DEPTH = dict(small=12, base=12, large=24)
WIDTH = dict(small=384, base=768, large=1024)
DATASET = dict(ade20k=('ADE20KDataset', 150), gtav=('GTAVDataset', 19),
               citys2acdc=('CityscapesDataset', 19))
ADAPTER = dict(lora='LoRAAdapter', adaptformer='AdaptFormerAdapter', vpt='VPTDeep', frozen=None)


def fields(config):
    match = NAME.fullmatch(osp.basename(config))
    assert match, f'{config}: not named as HEAD_TRUNK_METHOD_SIZE_CROP_ITERSk_DATA[_rein_recipe]'
    return match.groupdict()


def test_some_configs_of_each_kind_are_found():
    """The set is what is on disk; this only guards against a glob that finds nothing."""
    kinds = {(f['head'], f['method'], bool(f['rein_recipe'])) for f in map(fields, CONFIGS)}
    assert {('linear', 'rein', False), ('linear', 'rein', True), ('mask2former', 'rein', False),
            ('linear', 'lora', False), ('mask2former', 'frozen', False)} <= kinds


@pytest.mark.parametrize('config', CONFIGS)
def test_config_is_what_its_name_says(config):
    f = fields(config)
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    model, backbone, trunk = cfg.model, cfg.model.backbone, cfg.model.backbone.trunk
    if f['trunk'] == 'dinov2':
        assert trunk.type == 'DINOv2' and trunk.arch == f['size'] == trunk.pretrained
    else:
        assert trunk.type == 'TimmViT' and trunk.name == f'vit_{f["size"]}_patch16_dinov3'
        assert trunk.pretrained == f'dinov3_{f["size"]}'
    if f['method'] == 'rein':
        assert backbone.type == 'ReinBackbone' and backbone.reins.type == 'LoRAReins'
        assert backbone.reins.link_token_to_query == (f['head'] == 'mask2former')
    else:
        assert backbone.type == 'PEFTBackbone'
        assert (backbone.adapter or {}).get('type') == ADAPTER[f['method']]
    depth = DEPTH[f['size']]
    if f['head'] == 'linear':  # the last block's tokens, at the trunk's width
        assert model.decode_head.type == 'ConvUpsampleLinearBNHead'
        assert backbone.out_indices == [depth - 1]
        assert model.decode_head.in_channels == model.decode_head.channels == WIDTH[f['size']]
    else:  # four blocks of the trunk, the last one included
        assert model.decode_head.type == ('ReinMask2FormerHead' if f['method'] == 'rein'
                                          else 'Mask2FormerHead')
        assert len(backbone.out_indices) == 4 and backbone.out_indices[-1] == depth - 1
    crop = (int(f['crop']), ) * 2
    assert tuple(model.data_preprocessor.size) == crop == tuple(model.test_cfg.crop_size)
    assert [tuple(t.crop_size) for t in cfg.train_pipeline if t.type == 'RandomCrop'] == [crop]
    iters = int(f['iters']) * 1000
    assert cfg.train_cfg.max_iters == iters == cfg.param_scheduler[-1].end
    dataset, classes = DATASET[f['data']]
    assert cfg.train_dataloader.dataset.type == dataset
    assert model.decode_head.num_classes == classes


def expected_options(config, cfg, name, module):
    """(lr, weight decay) of a trainable parameter under the recipe the config states: Rein's
    official one (its configs: AdamW 1e-4 at crop 512, 6e-5 at 1024, decay 0.05 but none on norms,
    query/level embeddings, learnable tokens and the Reins scale), or ViT-Split's for the ADE20K
    linear-head configs (the lr of the ViT-Split config they sit beside, decay 0.01 on all)."""
    f = fields(config)
    if f['head'] == 'mask2former' or f['rein_recipe']:
        lr = {512: 1e-4, 1024: 6e-5}[int(f['crop'])]
        norm = isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm))
        no_decay = norm or any(k in name for k in ('norm', 'query_embed', 'level_embed',
                                                   'learnable_tokens', 'reins.scale'))
        return lr, 0.0 if no_decay else 0.05
    iters = '20k' if f['trunk'] == 'dinov2' else '40k'
    vitsplit = Config.fromfile(osp.join(
        REPO, 'configs', 'ade20k', 'vitsplit',
        f'linear_{f["trunk"]}_vitsplit_{f["size"]}_512_{iters}_ade20k.py'))
    return vitsplit.optim_wrapper.optimizer.lr, 0.01


@pytest.mark.parametrize('config', CONFIGS)
def test_optimizer_applies_the_stated_recipe(config):
    cfg = tiny_config(config)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    modules = dict(model.named_modules())
    options = {id(p): (g['lr'], g['weight_decay'])
               for g in optim.optimizer.param_groups for p in g['params']}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, p in trainable:
        module = modules[name.rpartition('.')[0]]
        assert options[id(p)] == pytest.approx(expected_options(config, cfg, name, module)), name
    if fields(config)['method'] == 'rein':  # the parameters the two recipes treat differently
        assert {'backbone.reins.learnable_tokens_a', 'backbone.reins.learnable_tokens_b',
                'backbone.reins.scale'} <= {n for n, _ in trainable}


# An L linear-head step takes ~50 s on a loaded 2-core CPU.
@pytest.mark.parametrize('config', [
    pytest.param(c, marks=pytest.mark.slow) if c.startswith('ade20k/rein/') and '_large_' in c else c
    for c in CONFIGS])
def test_config_trains_one_step_on_cpu(config):
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    init_default_scope('mmseg')
    cfg.model.backbone.trunk.pretrained = None
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    optim = build_optim_wrapper(model, cfg.optim_wrapper)  # the config's constructor
    model.train()
    size = 64 if cfg.model.backbone.trunk.get('patch_size') == 16 else 56
    num_classes = cfg.model.decode_head.num_classes
    label = torch.zeros(1, size, size, dtype=torch.long)
    label[:, 8:40, 10:50] = 1
    label[:, 40:, :20] = num_classes - 1
    meta = dict(img_shape=(size, size), pad_shape=(size, size), ori_shape=(size, size))
    samples = [SegDataSample(gt_sem_seg=PixelData(data=label), metainfo=meta)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = model.loss(torch.randn(1, 3, size, size), samples)
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss)
    optim.update_params(loss)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert not any(n.startswith('backbone.trunk.') and '.lora_' not in n for n in trainable)
    optimized = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}
