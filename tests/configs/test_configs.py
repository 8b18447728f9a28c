"""Shipped configs and scripts: pipelines parse, scripts name configs that exist, small configs run."""
import glob
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401


def shipped_configs(repo_dir):
    return sorted(c for c in glob.glob(osp.join(repo_dir, 'configs', '**', '*.py'), recursive=True)
                  if '_base_' not in c.split(osp.sep))  # the fragments, not base-size configs


def test_dataset_pipelines_parse(repo_dir):
    init_default_scope('mmseg')
    for path in shipped_configs(repo_dir):
        cfg = Config.fromfile(path)
        assert cfg.custom_imports['imports'][0] == 'mmseg_custom', path
        # mmseg.apis.inference_model (tools/image_demo.py) reads the top-level test_pipeline.
        assert 'test_pipeline' in cfg, f'{path}: no top-level test_pipeline for inference'
        Compose(cfg.test_pipeline)
        for split in ('train', 'val', 'test'):
            loader = cfg.get(f'{split}_dataloader')
            if loader:  # a ConcatDataset (per-domain validation) has one pipeline per part
                for dataset in loader.dataset.get('datasets', [loader.dataset]):
                    Compose(dataset.pipeline)  # builds every transform


def test_scripts_name_existing_configs(repo_dir):
    scripts = glob.glob(osp.join(repo_dir, 'scripts', '*', '*.sh'))
    expected = {f'ade20k/train_vitsplit_{n}.sh' for n in ('small', 'base', 'large', 'large_896',
                                                          'giant_896')}
    expected |= {f'cityscapes/train_vitsplit_{n}.sh' for n in ('small', 'base', 'large')}
    expected |= {f'pascal_context/train_vitsplit_{n}.sh' for n in ('base', 'large')}
    assert expected <= {osp.relpath(s, osp.join(repo_dir, 'scripts')) for s in scripts}
    for script in scripts:
        names = re.findall(r'configs/\S+\.py', open(script).read())
        assert names, f'{script} names no config'
        for name in names:
            assert osp.isfile(osp.join(repo_dir, name)), f'{script}: {name} does not exist'


def test_original_config_paths_exist(repo_dir):
    for name in ['ade20k/vitsplit/linear_dinov2_vitsplit_{}_20k_ade20k.py'.format(s) for s in
                 ('small_512', 'base_512', 'large_512', 'large_896', 'giant_896',
                  'sparsegate_small_512', 'sparsegate_base_512', 'sparsegate_large_512')] + \
            ['cityscapes/vitsplit/linear_dinov2_vitsplit_{}_896_20k_cityscapes.py'.format(s) for s in
             ('small', 'base', 'large', 'learnablegate_large')] + \
            ['pascal_context/vitsplit/linear_dinov2_vitsplit_{}_480_20k_pascal_context_59.py'.format(s)
             for s in ('base', 'large')]:
        assert osp.isfile(osp.join(repo_dir, 'configs', name)), name


SMALL = [
    'ade20k/vitsplit/linear_dinov2_vitsplit_small_512_20k_ade20k.py',
    'ade20k/vitsplit/linear_dinov2_vitsplit_sparsegate_small_512_20k_ade20k.py',
    'cityscapes/vitsplit/linear_dinov2_vitsplit_small_896_20k_cityscapes.py',
    'ade20k/baselines/linear_dinov2_frozen_small_512_40k_ade20k.py',
    'ade20k/baselines/linear_dinov2_finetune_small_512_40k_ade20k.py',
]


@pytest.mark.parametrize('config', SMALL)
def test_small_configs_train_step_on_cpu(config, repo_dir):
    """The real small configs (random weights), forward + backward on a tiny input."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(osp.join(repo_dir, 'configs', config))
    init_default_scope('mmseg')
    cfg.model.backbone.trunk.pretrained = None
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    model.train()
    x = torch.randn(2, 3, 70, 84)
    samples = [SegDataSample(gt_sem_seg=PixelData(
        data=torch.randint(0, cfg.model.decode_head.num_classes, (1, 70, 84)))) for _ in range(2)]
    losses = model.loss(x, samples)
    losses['decode.loss_ce'].backward()
    assert torch.isfinite(losses['decode.loss_ce'])
    trained = [n for n, p in model.named_parameters() if p.grad is not None]
    assert any(n.startswith('decode_head.') for n in trained)
    if 'frozen' in config or 'vitsplit' in config:
        assert not any(n.startswith('backbone.trunk.') for n in trained)
    else:
        assert any(n.startswith('backbone.trunk.') for n in trained)


def test_linear_configs_need_no_mmdet(repo_dir):
    """The package imports mmdet only for the configs that list its Mask2Former parts: with mmdet
    unavailable, it imports and a linear config builds. (mmseg itself tries mmdet when
    ``mmseg.models`` loads, and falls back without it.)"""
    code = ('import sys; sys.modules["mmdet"] = None; import mmseg_custom; '
            'from mmseg_custom.utils.params import build_on_meta; '
            'from mmengine.config import Config; '
            'build_on_meta(Config.fromfile(sys.argv[1])); print("built")')
    config = osp.join(repo_dir, 'configs', SMALL[0])
    proc = subprocess.run([sys.executable, '-c', code, config], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=repo_dir)
    assert proc.stdout.split()[-1:] == ['built'], proc.stdout[-3000:]
    for path in shipped_configs(repo_dir):
        text = open(path).read()
        if 'MSDAPixelDecoder' in text or 'mask2former' in osp.basename(path):
            imports = Config.fromfile(path).custom_imports['imports']
            assert 'mmseg_custom.models.decode_heads.mask2former_pixel_decoder' in imports, path


def test_dataset_configs_have_multi_scale_flip_tta(repo_dir):
    """tools/test.py --tta needs tta_pipeline and tta_model: every shipped config has them,
    six scales times two flips, labels loaded as in the single-scale test pipeline."""
    init_default_scope('mmseg')
    for path in shipped_configs(repo_dir):
        cfg = Config.fromfile(path)
        if cfg.test_dataloader.dataset.type == 'ConcatDataset':
            continue  # several domains, each at its own scale: tools/test.py refuses --tta
        assert cfg.tta_model.type == 'SegTTAModel', path
        load, tta = cfg.tta_pipeline
        assert load.type == 'LoadImageFromFile' and tta.type == 'TestTimeAug', path
        scales, flips, annotations, pack = tta.transforms
        assert len(scales) == 6 and [f.prob for f in flips] == [0.0, 1.0], path
        single = [t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'LoadAnnotations']
        assert annotations == single, path
        Compose(cfg.tta_pipeline)
