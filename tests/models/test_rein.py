"""Rein: official checkpoints give the official logits; what trains; counts; bad input."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.apis import init_model
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401
from mmseg_custom.utils.params import build_on_meta, count_params

DATA = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data', 'rein')
CONFIG = osp.join(DATA, 'rein_small_citys.py')


@pytest.fixture(scope='module')
def golden():
    return torch.load(osp.join(DATA, 'rein_small_citys.golden.pt'), weights_only=True)


@pytest.fixture(scope='module')
def official_ckpt(tmp_path_factory):
    """The official full-weight checkpoint (~170 MB), written by the fixture's maker."""
    path = tmp_path_factory.mktemp('rein') / 'rein_small_citys.pth'
    subprocess.run([sys.executable, osp.join(DATA, 'make_rein_checkpoint.py'),
                    osp.join(DATA, 'rein_small_citys.keys.json'), str(path)], check=True,
                   stdout=subprocess.DEVNULL)
    return str(path)


@pytest.fixture(scope='module')
def official_model(official_ckpt):
    model = init_model(CONFIG, official_ckpt, device='cpu')
    return model.eval()


def test_official_checkpoint_gives_official_logits_fp64(official_model, golden):
    o, s = golden['fp64_grid']
    model = official_model.double()
    try:
        with torch.no_grad():
            for x, metas, ref in zip(golden['inputs'], golden['img_metas'],
                                     golden['seg_logits_fp64']):
                out = model.encode_decode(x.double(), metas)[..., o::s, o::s]
                assert out.shape == ref.shape
                err = (out - ref).abs().max().item()
                assert err < 1e-4, f'input {tuple(x.shape)}: max abs error {err:.2e}'
    finally:
        official_model.float()


def test_official_checkpoint_fp32_features_queries_and_logits(official_model, golden):
    o, s = golden['fp64_grid']
    with torch.no_grad():
        feats, queries = official_model.backbone(golden['inputs'][0][:1])
        for f, ref, scale in zip(feats, golden['backbone_feats'], golden['feat_scales']):
            ref = torch.nn.functional.interpolate(ref, scale_factor=scale, mode='bilinear',
                                                  align_corners=False) if scale != 1 else ref
            assert f.shape == ref.shape
            assert (f - ref).abs().max() < 1e-4
        assert (queries - golden['reins_querys']).abs().max() < 1e-4
        for x, metas, ref in zip(golden['inputs'], golden['img_metas'],
                                 golden['seg_logits_fp32_grid']):
            out = official_model.encode_decode(x, metas)[..., o::s, o::s]
            assert (out - ref).abs().max() < 1e-4


def test_trainable_counts_as_official_training(golden):
    groups = count_params(build_on_meta(Config.fromfile(CONFIG)))
    official = golden['trainable']  # counted by the official code when training starts
    assert groups['backbone.reins']['trainable'] == official['reins'] == 684_033
    assert groups['decode_head']['trainable'] == official['decode_head']
    assert groups['backbone.trunk']['trainable'] == 0
    assert groups['all']['trainable'] == official['trainable']
    assert groups['all']['total'] == official['all_params']


def test_rein_large_count_is_the_papers():
    cfg = Config.fromfile(osp.join(osp.dirname(DATA), '..', '..', 'configs', 'gtav', 'rein',
                                   'mask2former_dinov2_rein_large_512_40k_gtav.py'))
    groups = count_params(build_on_meta(cfg))
    assert round(groups['backbone.reins']['trainable'] / 1e6, 2) == 2.99  # paper, Table 1


def _tiny_model(num_queries=None, **reins):
    init_default_scope('mmseg')
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.trunk.arch = dict(embed_dims=64, depth=4, num_heads=2, ffn_type='mlp')
    cfg.model.backbone.out_indices = [0, 1, 2, 3]
    cfg.model.backbone.reins.update(reins)
    cfg.model.decode_head.in_channels = [64] * 4
    cfg.model.decode_head.num_queries = num_queries or cfg.model.backbone.reins.get(
        'token_length', 100)
    return MODELS.build(cfg.model)


def test_gradients_reach_exactly_reins_and_head():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    model = _tiny_model(token_length=10)
    model.init_weights()
    model.train()
    assert not model.backbone.trunk.training and model.backbone.reins.training
    x = torch.randn(1, 3, 64, 64)
    label = torch.randint(0, 19, (1, 64, 64))
    samples = [SegDataSample(gt_sem_seg=PixelData(data=label), metainfo=dict(
        img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))]
    losses = model.loss(x, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters()
                if n.startswith(('backbone.reins.', 'decode_head.'))}
    assert trainable == expected
    assert got == expected


def test_reins_contradicting_the_trunk_is_one_error():
    with pytest.raises(ValueError, match=r"num_layers=\d+ contradicts the trunk"):
        _tiny_model(num_layers=12)
    with pytest.raises(ValueError, match=r"embed_dims=\d+ contradicts the trunk"):
        _tiny_model(embed_dims=384)


def test_head_refuses_queries_not_linked_to_its_num_queries():
    model = _tiny_model(num_queries=12, token_length=10).eval()
    metas = [dict(img_shape=(32, 32), pad_shape=(32, 32), ori_shape=(32, 32))]
    with pytest.raises(ValueError, match=r'queries of shape \(10, 256\).*\(12, 256\)'):
        model.encode_decode(torch.randn(1, 3, 32, 32), metas)


def test_checkpoint_of_another_token_length_or_trunk_is_refused(official_ckpt):
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.reins.token_length = 50
    with pytest.raises(ValueError, match='learnable_tokens_a: checkpoint .*100.*model .*50'):
        init_model(cfg, official_ckpt, device='cpu')
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.trunk.arch = 'base'
    cfg.model.decode_head.in_channels = [768] * 4
    with pytest.raises(ValueError, match='another trunk size'):
        init_model(cfg, official_ckpt, device='cpu')


def test_reins_and_head_checkpoint_takes_the_trunk_from_its_pretrained_file(
        official_ckpt, official_model, golden, tmp_path):
    """The official releases hold reins + head only; the trunk comes from DINOv2 weights."""
    ckpt = torch.load(official_ckpt, weights_only=True)
    sd = ckpt['state_dict']
    trunk = {k[len('backbone.'):]: v for k, v in sd.items()
             if k.startswith('backbone.') and not k.startswith('backbone.reins.')}
    torch.save(trunk, tmp_path / 'dinov2_small_16.pth')
    torch.save({'state_dict': {k: v for k, v in sd.items() if k[len('backbone.'):] not in trunk},
                'meta': ckpt['meta']}, tmp_path / 'rein_head.pth')
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.trunk.pretrained = str(tmp_path / 'dinov2_small_16.pth')
    model = init_model(cfg, str(tmp_path / 'rein_head.pth'), device='cpu').eval()
    x, metas = golden['inputs'][1], golden['img_metas'][1]
    with torch.no_grad():
        torch.testing.assert_close(model.encode_decode(x, metas),
                                   official_model.encode_decode(x, metas))


def test_patch14_weights_load_into_a_patch16_trunk_as_reins_conversion(tmp_path, repo_dir):
    from mmseg_custom.models.backbones import DINOv2
    torch.manual_seed(0)
    src = DINOv2(arch=dict(embed_dims=32, depth=1, num_heads=2))  # patch 14, 37 x 37 grid
    src._random_init()
    sd = src.state_dict()
    torch.save(sd, tmp_path / 'p14.pth')
    trunk = DINOv2(arch=dict(embed_dims=32, depth=1, num_heads=2), patch_size=16, img_size=512,
                   pretrained=str(tmp_path / 'p14.pth'))
    trunk.init_weights()
    # Rein's convert_dinov2_large_512x512.py, at this width.
    pos = torch.cat((sd['pos_embed'][:, :1], torch.nn.functional.interpolate(
        sd['pos_embed'][:, 1:].reshape(1, 37, 37, 32).permute(0, 3, 1, 2), size=(32, 32),
        mode='bicubic', align_corners=False).permute(0, 2, 3, 1).reshape(1, 1024, 32)), dim=1)
    kernel = torch.nn.functional.interpolate(sd['patch_embed.proj.weight'], size=(16, 16),
                                             mode='bicubic', align_corners=False)
    assert torch.equal(trunk.pos_embed, pos)
    assert torch.equal(trunk.patch_embed.proj.weight, kernel)
    # The tool writes the same weights once.
    subprocess.run([sys.executable, osp.join(repo_dir, 'tools', 'convert_dinov2_patch16.py'),
                    str(tmp_path / 'p14.pth'), str(tmp_path / 'p16.pth')], check=True,
                   cwd=repo_dir, stdout=subprocess.DEVNULL)
    converted = torch.load(tmp_path / 'p16.pth', weights_only=True)
    assert torch.equal(converted['pos_embed'], pos)
    assert torch.equal(converted['patch_embed.proj.weight'], kernel)


def test_peft_optimizer_constructor_as_reins():
    from mmengine.optim import build_optim_wrapper
    model = _tiny_model(token_length=10)
    cfg = Config.fromfile(CONFIG)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = optim.optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    in_optim = {names[id(p)]: g for g in groups for p in g['params']}
    assert set(in_optim) == {n for n, p in model.named_parameters() if p.requires_grad}
    # Rein's paramwise_cfg: no decay on norms (by name, or GroupNorm by type), embeddings,
    # tokens and the scale.
    for name, group in in_optim.items():
        no_decay = any(k in name for k in ('norm', '.gn.', 'level_embed', 'learnable_tokens',
                                           'reins.scale'))
        assert group['weight_decay'] == (0.0 if no_decay else 0.05), name
        assert group['lr'] == 1e-4
