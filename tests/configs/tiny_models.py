"""Shipped configs at toy width: same modules, same depth, same trainable/frozen split, random
weights, seconds on a CPU. Used by the gradient test of every config and the 2-process test."""
import glob
import os.path as osp

from mmengine.config import Config
from mmengine.utils import import_modules_from_strings

from mmseg_custom.models.backbones.dinov2 import ARCHS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
WIDTH = 64  # trunk width and head channels (GroupNorm(32) after the neck's halving)
HEAD_WIDTH = 32  # Mask2Former's width (256 in the configs)
SIZE = 56  # input side: a 4 x 4 grid of 14-pixel patches


def shipped_configs():
    """Every experiment config (not the _base_ fragments, nor the configs a user wrote with
    tools/new_dataset.py into configs/custom/), relative to configs/."""
    root = osp.join(REPO, 'configs')
    rels = (osp.relpath(p, root) for p in glob.glob(osp.join(root, '**', '*.py'),
                                                    recursive=True))
    return sorted(r for r in rels if r.split(osp.sep)[0] not in ('_base_', 'custom'))


def _shrink_trunk(trunk):
    if trunk.get('type') == 'TimmViT':  # timm's own model at WIDTH, its depth and patch size
        trunk.update(pretrained=None, model_kwargs=dict(embed_dim=WIDTH, num_heads=2))
        return
    if trunk.get('type') != 'DINOv2':
        raise ValueError('tests/configs/tiny_models.py has no rule to shrink a '
                         f'{trunk.get("type")} trunk: add one')
    arch = ARCHS[trunk.arch] if isinstance(trunk.get('arch', 'small'), str) else trunk.arch
    trunk.update(arch=dict(embed_dims=WIDTH, depth=arch['depth'], num_heads=2,
                           ffn_type=arch.get('ffn_type', 'mlp')), pretrained=None)


def _shrink_mask2former(head, num_classes):
    w = HEAD_WIDTH
    head.update(in_channels=[w] * 4, feat_channels=w, out_channels=w, num_queries=8)
    for part in (head.pixel_decoder, head):
        part.positional_encoding.num_feats = w // 2
    for layer_cfg in (head.pixel_decoder.encoder.layer_cfg, head.transformer_decoder.layer_cfg):
        layer_cfg.ffn_cfg.update(embed_dims=w, feedforward_channels=2 * w)
        for key in ('self_attn_cfg', 'cross_attn_cfg'):
            if key in layer_cfg:
                layer_cfg[key].update(embed_dims=w, num_heads=4)
    head.loss_cls.class_weight = [1.0] * num_classes + [0.1]
    head.train_cfg.num_points = 256


def tiny_config(name, num_classes=None):
    """The shipped config ``name`` (relative to configs/) with a WIDTH-wide random trunk of the
    config's depth and heads to match; its ``custom_imports`` are imported."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    if num_classes is not None:
        cfg.model.decode_head.num_classes = num_classes
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    model = cfg.model
    model.data_preprocessor.size = (SIZE, SIZE)
    _shrink_trunk(model.backbone.trunk)
    if model.backbone.get('token_sharing'):
        model.backbone.token_sharing.policy.pretrained = None  # a random policy: no file needed
    if 'channels' in model.backbone:
        model.backbone.channels = WIDTH
    if model.get('neck'):
        model.neck.update(in_channels=WIDTH, out_channels=HEAD_WIDTH)
    head = model.decode_head
    if head.type in ('Mask2FormerHead', 'ReinMask2FormerHead'):
        _shrink_mask2former(head, head.num_classes)
        if not model.get('neck'):  # the backbone's maps go to the pixel decoder as they are
            head.in_channels = [WIDTH] * 4
        if model.backbone.get('reins'):  # Rein's tokens are the head's queries
            model.backbone.reins.update(token_length=head.num_queries, query_dims=HEAD_WIDTH)
    elif head.type == 'EoMTHead':  # queries and heads at the trunk's width
        head.update(in_channels=WIDTH, num_queries=8)
        head.loss_cls.class_weight = [1.0] * head.num_classes + [0.1]
        head.train_cfg.num_points = 256
    else:
        head.update(in_channels=WIDTH, channels=WIDTH)
    if model.get('test_cfg', {}).get('mode') == 'slide':
        model.test_cfg.update(crop_size=(SIZE, SIZE), stride=(SIZE, SIZE))
    elif model.get('test_cfg', {}).get('mode') == 'windows':
        model.test_cfg.update(crop_size=(SIZE, SIZE))
    return cfg
