"""Content-aware token sharing (CTS): plans, shared tokens, unsharing, policy and its labels."""
import re

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401
from mmseg_custom.models.backbones.token_sharing import (SharePlan, num_shared_superpatches,
                                                         policy_input, superpatch_labels,
                                                         unshared_map)

init_default_scope('mmseg')
TINY_TRUNK = dict(type='DINOv2', arch=dict(embed_dims=32, depth=3, num_heads=2))


def tiny_trunk(**kw):
    torch.manual_seed(0)
    trunk = MODELS.build(dict(TINY_TRUNK, **kw))
    trunk.init_weights()
    with torch.no_grad():  # layer scales of 1 and non-zero prefix tokens: nothing hides
        trunk.cls_token.normal_()
        if trunk.register_tokens is not None:
            trunk.register_tokens.normal_()
    return trunk.eval()


def tiny_segmentor(reduction=None, num_classes=4):
    backbone = dict(type='ViTSplit', trunk=TINY_TRUNK, out_indices=[0, 2], select_layers=[2],
                    channels=32)
    if reduction is not None:
        backbone['token_sharing'] = dict(type='TokenSharing', reduction=reduction,
                                         policy=dict(type='CTSPolicyNet'))
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=backbone,
        decode_head=dict(type='ConvUpsampleLinearBNHead', in_channels=32, channels=32,
                         num_classes=num_classes, dropout_ratio=0, norm_cfg=dict(type='BN')))
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial values everywhere (offsets too), same for every model
        for name, p in model.named_parameters():
            if 'token_sharing' not in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.dim() > 1 else 0.5)
                        + (1.0 if name.endswith('gamma') else 0.0))
    return model


def run_trunk(trunk, tokens, grid):
    for blk in trunk.blocks:
        tokens = trunk.apply_block(blk, tokens, grid)
    return unshared_map(trunk, tokens, grid)


def test_sharing_nothing_is_bitwise_the_plain_path():
    x = torch.randn(2, 3, 60, 70)  # padded to 70x70: a 5x5 grid, odd on both sides
    for kw in (dict(), dict(num_register_tokens=4)):
        trunk = tiny_trunk(**kw)
        plain, grid = trunk.tokenize(x)
        shared, plan = trunk.tokenize_shared(x, torch.zeros(2, 0, dtype=torch.long))
        assert torch.equal(plain, shared) and plan.grid == grid
        assert torch.equal(run_trunk(trunk, plain, grid), run_trunk(trunk, shared, plan))
    # Reduction 0: the segmentor with CTS configured gives the plain model's logits, bitwise.
    x = torch.randn(2, 3, 56, 84)
    plain, cts = tiny_segmentor().eval(), tiny_segmentor(reduction=0.0).eval()
    with torch.no_grad():
        assert torch.equal(plain(x, mode='tensor'), cts(x, mode='tensor'))


def test_reference_one_shared_superpatch():
    """Hand-written CTS (the official formation: bilinear 0.5x image region and embedding grid,
    sequence [cls, kept patches, shared], unshared by copying) on a 4x4 grid, superpatch 1."""
    trunk = tiny_trunk(img_size=56)
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        tokens, plan = trunk.tokenize_shared(x, torch.tensor([[1]]))
        out = run_trunk(trunk, tokens, plan)

        w = trunk.patch_embed.proj.weight
        b = trunk.patch_embed.proj.bias
        patches = F.conv2d(x, w, b, stride=14).flatten(2).transpose(1, 2)[0]  # (16, D)
        half = F.interpolate(x, scale_factor=0.5, mode='bilinear', align_corners=False,
                             recompute_scale_factor=False)  # the official downsampling
        region = half[:, :, 0:14, 14:28]  # superpatch (0, 1): pixels rows 0-27, cols 28-55
        shared_tok = F.conv2d(region, w, b, stride=14).flatten(1)[0]
        pos = trunk.pos_embed[0]  # 4x4 grid at img_size 56: no interpolation
        pos_grid = pos[1:].T.reshape(1, -1, 4, 4)
        shared_pos = F.interpolate(pos_grid, scale_factor=0.5, mode='bilinear',
                                   align_corners=False)[0, :, 0, 1]
        members = [2, 3, 6, 7]
        kept = [i for i in range(16) if i not in members]
        seq = torch.cat([trunk.cls_token[0] + pos[:1], patches[kept] + pos[1:][kept],
                         (shared_tok + shared_pos)[None]])[None]
        assert seq.shape[1] == 1 + 16 - 3
        assert torch.allclose(tokens, seq, atol=1e-5)
        for blk in trunk.blocks:
            seq = blk(seq)
        seq = trunk.norm(seq)[0, 1:]
        full = torch.empty(16, seq.shape[-1])
        full[kept] = seq[:12]
        full[members] = seq[12]
        ref = full.T.reshape(1, -1, 4, 4)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


def test_trunk_sizes_with_registers_and_rope_positions():
    trunk = tiny_trunk(img_size=98, num_register_tokens=4)  # a 7x7 table: interpolated to 5x5
    x = torch.randn(2, 3, 70, 70)  # 5x5 grid: superpatches tile the top-left 4x4
    shared = torch.tensor([[0, 3], [1, 2]])
    tokens, plan = trunk.tokenize_shared(x, shared)
    assert tokens.shape == (2, 5 + 25 - 3 * 2, 32)  # one token count for the whole batch
    plain, _ = trunk.tokenize(x)
    assert torch.equal(tokens[:, :5], plain[:, :5])  # cls and registers untouched
    # Kept patches are the plain tokens themselves.
    assert torch.equal(tokens[:, 5:5 + plan.kept.shape[1]],
                       plain[:, 5:].gather(1, plan.kept[..., None].expand(-1, -1, 32)))
    centres = plan.centres()
    assert centres.shape == (2, 25 - 6, 2)
    assert centres[0, -2:].tolist() == [[1.0, 1.0], [3.0, 3.0]]  # superpatches (0,0), (1,1)
    assert centres[0, 0].tolist() == [0.5, 2.5]  # first kept patch of image 0: (0, 2)


def test_unsharing_copies_each_shared_token_to_its_four_positions():
    plan = SharePlan((5, 6), torch.tensor([[0, 5], [2, 4]]), num_prefix_tokens=1)
    assert plan.super_grid == (2, 3)
    n = 1 + 30 - 6
    tokens = torch.arange(2 * n, dtype=torch.float).view(2, n, 1).expand(2, n, 3)
    full = plan.unshare(tokens)
    assert full.shape == (2, 31, 3)
    grid = full[:, 1:, 0].view(2, 5, 6)
    # Image 0 shares superpatch 0 (rows 0-1, cols 0-1) and 5 (rows 2-3, cols 4-5).
    assert (grid[0, 0:2, 0:2] == tokens[0, n - 2, 0]).all()
    assert (grid[0, 2:4, 4:6] == tokens[0, n - 1, 0]).all()
    assert (grid[1, 0:2, 4:6] == tokens[1, n - 2, 0]).all()
    assert (grid[1, 2:4, 2:4] == tokens[1, n - 1, 0]).all()
    # Every other token appears exactly once, in raster order.
    for b in range(2):
        rest = [v for i, v in enumerate(grid[b].flatten().tolist())
                if i not in plan.quad[b].flatten().tolist()]
        assert rest == tokens[b, 1:n - 2, 0].tolist()
    # Through the segmentor's trunk: the 4 cells of each shared superpatch hold one vector.
    model = tiny_segmentor(reduction=0.3).eval()
    bb = model.backbone
    x = torch.randn(2, 3, 84, 84)  # 6x6 grid, 9 superpatches; 30 %: ceil(0.3*36/3) = 4 shared
    with torch.no_grad():
        tokens, plan = bb.token_sharing(bb.trunk, x)
        assert plan.num_shared == 4 and tokens.shape[1] == 1 + 36 - 12
        feats, head_input, _ = bb.frozen_features(x)
    for fmap in feats.values():
        cells = fmap.flatten(2).transpose(1, 2)  # (B, 36, D)
        for b in range(2):
            for quad in plan.quad[b]:
                assert torch.equal(cells[b, quad], cells[b, quad[:1]].expand(4, -1))
            kept = cells[b, plan.kept[b]]
            assert torch.cdist(kept, kept).add(torch.eye(len(kept))).min() > 0


def test_num_shared_matches_the_official_setting():
    assert num_shared_superpatches(0.3, (32, 32)) == 103  # official README: 612 + 103 tokens
    assert num_shared_superpatches(0.0, (37, 37)) == 0
    assert num_shared_superpatches(0.3, (37, 37)) == 137  # ViT-Split at 512: 1369 -> 958
    assert num_shared_superpatches(0.74, (3, 3)) == 1  # capped at the superpatches there are
    with pytest.raises(ValueError, match='reduction'):
        MODELS.build(dict(type='TokenSharing', reduction=0.8, policy=dict(type='CTSPolicyNet')))


def test_policy_labels_from_hand_made_label_maps():
    lab = torch.full((1, 56, 56), 3)
    lab[0, 0:28, 28:56] = 1
    lab[0, 5, 40] = 2  # superpatch (0, 1): two classes
    lab[0, 28:56, 0:28] = 255
    lab[0, 30, 3] = 4  # superpatch (1, 0): one labelled pixel, class 4, rest ignored
    lab[0, 28:56, 28:56] = 255  # superpatch (1, 1): nothing labelled
    target = superpatch_labels(lab, (2, 2), patch_size=14)
    assert target.tolist() == [[[1, 0], [1, 255]]]
    # Padded as the trunk pads images (centre, 255): 50x50 -> 56x56, padding never counts.
    trunk = tiny_trunk()
    small = torch.zeros(1, 50, 50, dtype=torch.long)
    small[0, 40:, :] = 2
    padded = trunk.pad(small, 255)
    assert padded.shape == (1, 56, 56) and padded[0, 0, 0] == 255 and padded[0, 3, 3] == 0
    assert superpatch_labels(padded, (2, 2), 14).tolist() == [[[1, 1], [0, 0]]]
    # Odd grid (5x5): the last patch row and column are never part of a superpatch.
    odd = torch.zeros(1, 70, 70, dtype=torch.long)
    odd[0, 56:, :] = 1
    odd[0, :, 56:] = 2
    assert superpatch_labels(odd, (2, 2), 14).tolist() == [[[1, 1], [1, 1]]]


def test_policy_grid_matches_superpatch_grid():
    policy = MODELS.build(dict(type='CTSPolicyNet')).eval()
    x = torch.randn(1, 3, 518, 518)  # 512 crop padded for patch 14: 37x37 patches
    inp = policy_input(x, (18, 18), patch_size=14)
    assert inp.shape[-2:] == (576, 576)  # 18 superpatches of 28 px, each resized to 32 px
    with torch.no_grad():
        assert policy(inp).shape == (1, 2, 18, 18)
    x16 = torch.randn(1, 3, 64, 96)  # patch 16: superpatches are the policy's own 32 px cells
    assert torch.equal(policy_input(x16, (2, 3), patch_size=16), x16)


IMAGENET_MEAN, IMAGENET_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def imagenet_sharing(**policy):
    return MODELS.build(dict(type='TokenSharing', input_mean=IMAGENET_MEAN,
                             input_std=IMAGENET_STD, policy=dict(type='CTSPolicyNet', **policy)))


@pytest.mark.parametrize('patch', [16, 14])
def test_policy_sees_the_official_input_whatever_the_segmentor_normalisation(patch):
    """The official PolicyNet was trained on (x - 127.5) / 127.5 (RGB) with 32 px superpatches
    (tue-mps/cts-segmenter policynet/policynet/data_*.py); the segmentor hands TokenSharing its
    data preprocessor's ImageNet normalisation. Computed here by hand from the raw pixels."""
    torch.manual_seed(0)
    sharing = imagenet_sharing()
    raw = torch.rand(2, 3, 4 * patch, 6 * patch) * 255  # a 4x6 patch grid: 2x3 superpatches
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (raw - mean) / std  # what the data preprocessor gives the backbone
    official = (raw - 127.5) / 127.5
    if patch != 16:  # 28 px superpatches shown to the policy as its 32 px ones
        official = F.interpolate(official, size=(64, 96), mode='bilinear', align_corners=False)
    with torch.no_grad():
        ref = sharing.policy(official)
        logits = sharing.policy_logits(x, (4, 6), patch)
        torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
        # What it was given before: the segmentor's normalisation.
        assert not torch.allclose(sharing.policy(policy_input(x, (2, 3), patch)), ref, atol=1e-2)
        scores = ref.softmax(dim=1)[:, 1].flatten(1)
        assert torch.equal(sharing.select(x, (4, 6), patch, 2),
                           scores.topk(2, dim=1).indices.sort(dim=1).values)
    # A policy with its own normalisation (here ImageNet's) gets exactly that.
    own = imagenet_sharing(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert torch.allclose(own.policy.prepare(x, (2, 3), patch, own.input_mean, own.input_std),
                          policy_input(x, (2, 3), patch), atol=1e-5)


def save_policy_file(path, policy, meta=None):
    torch.save(dict(state_dict=policy.state_dict(), meta=meta) if meta is not None
               else policy.state_dict(), path)  # no meta: an official PolicyNet model.pth
    return str(path)


OFFICIAL = dict(mean=[127.5] * 3, std=[127.5] * 3, superpatch_px=32)


def test_policy_file_contradicting_the_config_is_refused(tmp_path):
    from mmseg_custom.models.backbones.token_sharing import CTSPolicyNet
    policy = MODELS.build(dict(type='CTSPolicyNet'))
    # Trained for patch 16 (its metadata says so), used with a patch-14 trunk.
    p16 = save_policy_file(tmp_path / 'p16.pth', policy, dict(OFFICIAL, patch_size=16))
    sharing = imagenet_sharing(pretrained=p16)
    sharing.init_weights()
    trunk = tiny_trunk()
    with pytest.raises(ValueError) as info, torch.no_grad():
        sharing(trunk, torch.randn(1, 3, 56, 56))
    message = str(info.value)
    assert f'CTS policy file {p16} was trained for patch size 16' in message
    assert 'trunk has patch size 14' in message and 'train_cts_policy.py' in message
    # Trained with another normalisation than the config gives the policy: refused on loading
    # and by the launchers' preflight (find_weights), naming both values.
    imagenet = save_policy_file(tmp_path / 'imagenet.pth', policy,
                                dict(OFFICIAL, mean=IMAGENET_MEAN, std=IMAGENET_STD, patch_size=14))
    expected = (f'CTS policy file {imagenet} was trained with mean {IMAGENET_MEAN}, but the config '
                'gives the policy mean [127.5, 127.5, 127.5]')
    with pytest.raises(ValueError, match=re.escape(expected)):
        imagenet_sharing(pretrained=imagenet).init_weights()
    with pytest.raises(ValueError, match=re.escape(expected)):
        CTSPolicyNet.find_weights(dict(type='CTSPolicyNet', pretrained=imagenet))
    # ... and accepted where the config states that normalisation.
    fits = imagenet_sharing(pretrained=imagenet, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    fits.init_weights()
    assert fits.policy.trained_patch_size == 14
    with torch.no_grad():
        fits(trunk, torch.randn(1, 3, 56, 56))
    big = save_policy_file(tmp_path / 'big.pth', policy, dict(OFFICIAL, superpatch_px=64))
    with pytest.raises(ValueError, match='trained with superpatch_px 64, but the config gives '
                                         'the policy superpatch_px 32'):
        imagenet_sharing(pretrained=big).init_weights()
    # Written before the normalisation was recorded: what it saw is unknown.
    old = save_policy_file(tmp_path / 'old.pth', policy, dict(patch_size=14, iters=5))
    with pytest.raises(ValueError, match=re.escape(f'CTS policy file {old} does not state the '
                                                   'input normalisation')):
        imagenet_sharing(pretrained=old).init_weights()


def test_official_policy_checkpoint_loads_with_the_official_input(tmp_path):
    torch.manual_seed(0)
    policy = MODELS.build(dict(type='CTSPolicyNet'))
    official = save_policy_file(tmp_path / 'model.pth', policy)  # policynet/train.py's file
    sharing = imagenet_sharing(pretrained=official)
    sharing.init_weights()
    for (k, a), b in zip(policy.state_dict().items(), sharing.policy.state_dict().values()):
        assert torch.equal(a, b), k
    assert sharing.policy.mean == sharing.policy.std == (127.5, 127.5, 127.5)
    assert sharing.policy.trained_patch_size is None  # 32 px superpatches at any trunk patch
    with torch.no_grad():
        tokens, plan = sharing(tiny_trunk(), torch.randn(1, 3, 56, 56))
    assert plan.num_shared == 2
    # A config that gives the official file another normalisation contradicts it.
    with pytest.raises(ValueError, match='trained with mean'):
        imagenet_sharing(pretrained=official, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD).init_weights()
    # Without the input normalisation the policy cannot be given its input: refused.
    blind = MODELS.build(dict(type='TokenSharing', policy=dict(type='CTSPolicyNet',
                                                                pretrained=official)))
    with pytest.raises(ValueError, match='input_mean and input_std'):
        blind.init_weights()


def test_fast_policy_equals_the_policy_and_follows_its_weights():
    sharing = MODELS.build(dict(type='TokenSharing', policy=dict(type='CTSPolicyNet')))
    g = torch.Generator().manual_seed(0)

    def randomize_bn(policy):
        with torch.no_grad():  # BN statistics far from identity, so folding matters
            for name, t in list(policy.named_parameters()) + list(policy.named_buffers()):
                if 'bn' in name and t.is_floating_point():
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith(
                        ('running_var', 'weight')) else torch.randn(t.shape, generator=g) * 0.2)

    randomize_bn(sharing.policy)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = sharing.policy(x)
        assert torch.allclose(sharing.run_policy(x), ref, atol=1e-4, rtol=1e-4)
        assert not any(isinstance(m, torch.nn.BatchNorm2d)
                       for m in sharing._fast_policy[0].modules())
        assert set(sharing.state_dict()) == {'policy.' + k for k in sharing.policy.state_dict()}
        other = MODELS.build(dict(type='CTSPolicyNet'))
        randomize_bn(other)
        sharing.load_state_dict({'policy.' + k: v for k, v in other.state_dict().items()})
        assert torch.allclose(sharing.run_policy(x), other.eval()(x), atol=1e-4, rtol=1e-4)
        randomize_bn(other)  # loaded through the policy's own init_weights path
        sharing.policy.load_state_dict(other.state_dict())
        assert torch.allclose(sharing.run_policy(x), other(x), atol=1e-4, rtol=1e-4)


def test_gradients_reach_exactly_the_trainable_parts():
    model = tiny_segmentor(reduction=0.3)
    model.train()
    bb = model.backbone
    assert not bb.trunk.training and not bb.token_sharing.policy.training
    x = torch.randn(2, 3, 84, 98)
    lengths = []
    hook = bb.task_head[0].register_forward_hook(lambda m, i, o: lengths.append(o.shape[1]))
    out = model(x, mode='tensor')
    hook.remove()
    assert lengths == [1 + 42 - 3 * 5]  # the task head ran on the shared sequence
    assert out.shape == (2, 4, 24, 28)  # full grids after unsharing: 4x the 6x7 grid
    out.square().mean().backward()
    trainable = ('backbone.task_head.', 'backbone.prior_head.', 'backbone.fusion.',
                 'decode_head.')
    for name, p in model.named_parameters():
        if name.startswith(('backbone.trunk.', 'backbone.token_sharing.')):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert name.startswith(trainable), f'unexpected parameter {name}'
            assert p.grad is not None and p.grad.abs().sum() > 0, f'{name} gets no gradient'


def test_policy_weights_load_and_missing_file_is_a_clear_error(tmp_path):
    import timm
    torch.manual_seed(0)
    # timm's ImageNet classifier layout: the backbone loads, the head keeps its values.
    classifier = timm.create_model('efficientnet_lite0', pretrained=False)
    path = tmp_path / 'effnet.pth'
    torch.save(classifier.state_dict(), path)
    policy = MODELS.build(dict(type='CTSPolicyNet', pretrained=str(path)))
    head = policy.head.weight.clone()
    policy.init_weights()
    assert torch.equal(policy.backbone.conv_stem.weight, classifier.conv_stem.weight)
    assert torch.equal(policy.backbone.blocks[6][0].conv_pwl.weight,
                       classifier.blocks[6][0].conv_pwl.weight)
    assert torch.equal(policy.head.weight, head)
    # A policy checkpoint (official PolicyNet keys: backbone.*, head.*) loads entirely.
    ckpt = tmp_path / 'policy.pth'
    torch.save(dict(state_dict=policy.state_dict()), ckpt)
    other = MODELS.build(dict(type='CTSPolicyNet', pretrained=str(ckpt)))
    other.init_weights()
    for (k, a), (_, b) in zip(policy.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), k
    missing = tmp_path / 'nowhere' / 'policy.pth'
    model = imagenet_sharing(pretrained=str(missing))
    with pytest.raises(FileNotFoundError, match='train_cts_policy.py'):
        model.init_weights()


def test_random_policy_init_keeps_timm_init_and_is_quiet(capfd):
    """Outside a runner (no log file) BaseModule's pass printed 4 lines per parameter (584 for
    EfficientNet-Lite0) to the console of tools/train_cts_policy.py."""
    from mmengine.logging import MMLogger
    MMLogger.get_instance('policy_init_test')  # the current logger: console only
    torch.manual_seed(0)
    policy = MODELS.build(dict(type='CTSPolicyNet'))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    capfd.readouterr()
    policy.init_weights()
    out, err = capfd.readouterr()
    assert 'init_weights' not in out + err, (out + err)[:300]
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize('config, reduction, tokens', [
    # The paper's settings: ADE20K 30 % (612 + 103 of 1024 tokens), Cityscapes 43.75 % (960 +
    # 336 of 2304); at patch 14 and these crops: 1369 -> 958 and 4096 -> 2302 tokens.
    ('ade20k/vitsplit_cts/linear_dinov2_vitsplit_cts30_small_512_40k_ade20k.py', 0.3, 958),
    ('cityscapes/vitsplit_cts/linear_dinov2_vitsplit_cts44_small_896_40k_cityscapes.py', 0.4375,
     2302)])
def test_cts_configs_follow_the_paper_and_need_their_policy(config, reduction, tokens, repo_dir,
                                                             tmp_path):
    import os.path as osp

    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from mmseg_custom.utils.preflight import preflight
    cfg = Config.fromfile(osp.join(repo_dir, 'configs', config))
    sharing = cfg.model.backbone.token_sharing
    assert sharing.reduction == reduction and sharing.policy.pretrained.startswith('checkpoints/')
    crop = cfg.model.data_preprocessor.size[0]
    side = -(-crop // 14)  # the trunk pads the crop to whole patches
    assert side * side - 3 * num_shared_superpatches(reduction, (side, side)) == tokens
    # The policy undoes the data preprocessor's normalisation: the config passes it on.
    assert sharing.input_mean == cfg.model.data_preprocessor.mean
    assert sharing.input_std == cfg.model.data_preprocessor.std
    cfg.model.backbone.trunk.pretrained = None
    cfg.model.backbone.token_sharing.policy.pretrained = str(tmp_path / 'missing.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth.*train_cts_policy.py'):
        preflight(cfg, splits=())
    cfg.model.backbone.token_sharing.policy.pretrained = None
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    model.train()
    lengths = []
    model.backbone.task_head[0].register_forward_hook(lambda m, i, o: lengths.append(o.shape[1]))
    x = torch.randn(1, 3, 112, 140)  # 8x10 patches, 20 superpatches
    samples = [SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 19, (1, 112, 140))))]
    loss = model.loss(x, samples)['decode.loss_ce']
    loss.backward()
    assert torch.isfinite(loss)
    assert lengths == [1 + 80 - 3 * num_shared_superpatches(reduction, (8, 10))]


# TimmViT: one model per position scheme (RoPE + storage tokens, absolute + RoPE, absolute
# with cls, absolute without prefix tokens).
TIMM_SHARING = ['vit_small_patch16_dinov3', 'eva02_base_patch16_clip_224',
                'vit_base_patch14_dinov2', 'vit_base_patch16_siglip_224']


def tiny_timm(name):
    torch.manual_seed(0)
    trunk = MODELS.build(dict(type='TimmViT', name=name,
                              model_kwargs=dict(embed_dim=64, depth=2, num_heads=2)))
    trunk.init_weights()
    with torch.no_grad():  # layer scales of ~1 and non-zero prefix tokens: nothing hides
        for n, p in trunk.named_parameters():
            if 'gamma' in n:
                p.uniform_(0.5, 1.5)
            elif n.endswith(('cls_token', 'reg_token')):
                p.normal_()
    return trunk.eval()


@pytest.mark.parametrize('name', TIMM_SHARING)
def test_timm_sharing_nothing_is_bitwise_the_plain_path(name):
    trunk = tiny_timm(name)
    p = trunk.patch_size
    x = torch.randn(2, 3, 5 * p - 4, 5 * p)  # padded: a 5x5 grid, odd on both sides
    with torch.no_grad():
        plain, grid = trunk.tokenize(x)
        shared, plan = trunk.tokenize_shared(x, torch.zeros(2, 0, dtype=torch.long))
        assert torch.equal(plain, shared) and plan.grid == grid
        assert torch.equal(run_trunk(trunk, plain, grid), run_trunk(trunk, shared, plan))


@pytest.mark.parametrize('name', TIMM_SHARING)
def test_timm_reference_one_shared_superpatch(name):
    """Hand-written CTS on a 6x8 grid, superpatch (1, 1) shared: its token is the patch
    embedding of the 2x bilinear-downsampled region plus the 2x2 bilinear mean of the absolute
    position embedding, and RoPE rotates it by the angles of the superpatch centre: RoPE angles
    are linear in the position, so the centre's are the circular mean of its 4 patches' (exact
    while neighbouring patches differ by less than pi, as on this grid)."""
    trunk = tiny_timm(name)
    m, p = trunk.model, trunk.patch_size
    npt = trunk.num_prefix_tokens
    x = torch.randn(1, 3, 6 * p, 8 * p)
    with torch.no_grad():
        tokens, plan = trunk.tokenize_shared(x, torch.tensor([[5]]))  # row 1, col 1 of 3x4
        out = run_trunk(trunk, tokens, plan)

        plain, _ = trunk.tokenize(x)  # kept patches: the plain tokens
        half = F.interpolate(x, scale_factor=0.5, mode='bilinear', align_corners=False,
                             recompute_scale_factor=False)  # the official downsampling
        region = half[:, :, p:2 * p, p:2 * p]  # patch rows 2-3, cols 2-3 at full resolution
        shared_tok = m.patch_embed(region).flatten(1, 2)[0, 0]
        pos = trunk._pos_embed(torch.zeros(1, 6, 8, 64))[0, npt:]  # positions alone
        pos_grid = pos.T.reshape(1, 64, 6, 8)
        shared_pos = F.interpolate(pos_grid, scale_factor=0.5, mode='bilinear',
                                   align_corners=False)[0, :, 1, 1]
        members = [18, 19, 26, 27]
        kept = [i for i in range(48) if i not in members]
        seq = torch.cat([plain[0, :npt], plain[0, npt:][kept],
                         (trunk.model.norm_pre(shared_tok + shared_pos))[None]])[None]
        assert seq.shape[1] == npt + 48 - 3
        torch.testing.assert_close(tokens, seq, atol=1e-5, rtol=1e-5)
        rope = None
        if trunk.rope is not None:
            table = trunk.rope.get_embed(shape=[6, 8])  # (48, 2d) [sin | cos] of the full grid
            sin, cos = table[members].mean(0, keepdim=True).chunk(2, dim=-1)
            norm = torch.sqrt(sin ** 2 + cos ** 2)
            rope_ref = torch.cat([table[kept], torch.cat([sin / norm, cos / norm], -1)])
            rope = rope_ref[None, None]
            torch.testing.assert_close(trunk.shared_rope_table(plan, x.device), rope,
                                       atol=1e-5, rtol=1e-5)
        for blk in m.blocks:
            seq = blk(seq) if rope is None else blk(seq, rope=rope)
        seq = m.norm(seq)[0, npt:]
        full = torch.empty(48, 64)
        full[kept] = seq[:44]
        full[members] = seq[44]
        ref = full.T.reshape(1, 64, 6, 8)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_timm_rope_sharing_per_image_and_cached_per_plan():
    trunk = tiny_timm('vit_small_patch16_dinov3')
    x = torch.randn(2, 3, 96, 112)  # 6x7 grid
    with torch.no_grad():
        tokens, plan = trunk.tokenize_shared(x, torch.tensor([[0, 5], [2, 8]]))
        table = trunk.shared_rope_table(plan, x.device)
        assert table.shape == (2, 1, 42 - 6, 64) and table[0].ne(table[1]).any()
        assert trunk.shared_rope_table(plan, x.device) is table  # every block reuses it
        # Position by position: the angles of plan.centres() (patch units).
        cent = plan.centres()
        coords = (cent / torch.tensor([6.0, 7.0])) * 2 - 1  # DINOv3: centred, normalised
        for b in range(2):
            sin, cos = trunk.rope._get_pos_embed_from_coords(coords[b])
            torch.testing.assert_close(table[b, 0], torch.cat([sin, cos], -1), atol=1e-5,
                                       rtol=1e-5)


def test_vitsplit_with_sharing_on_a_timm_rope_trunk_trains():
    trunk = dict(type='TimmViT', name='vit_small_patch16_dinov3',
                 model_kwargs=dict(embed_dim=64, depth=3, num_heads=2))
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(type='ViTSplit', trunk=trunk, out_indices=[0, 2], select_layers=[2],
                      channels=32, token_sharing=dict(type='TokenSharing', reduction=0.3,
                                                      policy=dict(type='CTSPolicyNet'))),
        decode_head=dict(type='ConvUpsampleLinearBNHead', in_channels=32, channels=32,
                         num_classes=4, dropout_ratio=0, norm_cfg=dict(type='BN')))
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    model.train()
    lengths = []
    model.backbone.task_head[0].register_forward_hook(lambda m, i, o: lengths.append(o.shape[1]))
    out = model(torch.randn(2, 3, 96, 128), mode='tensor')  # 6x8 grid: 5 superpatches shared
    out.square().mean().backward()
    assert lengths == [5 + 48 - 15] and out.shape == (2, 4, 24, 32)
    for name, prm in model.named_parameters():
        frozen = name.startswith(('backbone.trunk.', 'backbone.token_sharing.'))
        assert (prm.grad is None) == frozen, name
