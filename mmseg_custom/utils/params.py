"""Parameter counts per module group, on models built on the meta device (no weights allocated)."""
from collections import OrderedDict

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings
from mmseg.registry import MODELS


def build_on_meta(cfg: Config) -> torch.nn.Module:
    """Build ``cfg.model`` (after the config's ``custom_imports``) without allocating or loading
    weights."""
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def group_of(name: str) -> str:
    """'backbone.task_head.0.attn.qkv.weight' -> 'backbone.task_head'; 'decode_head.x' -> 'decode_head'."""
    parts = name.split('.')
    return '.'.join(parts[:2]) if parts[0] == 'backbone' else parts[0]


def count_params(model: torch.nn.Module) -> 'OrderedDict[str, dict]':
    """{group: {'total': n, 'trainable': n}}, plus 'all'."""
    groups = OrderedDict()
    for name, p in model.named_parameters():
        g = groups.setdefault(group_of(name), dict(total=0, trainable=0))
        g['total'] += p.numel()
        g['trainable'] += p.numel() if p.requires_grad else 0
    groups['all'] = dict(total=sum(g['total'] for g in groups.values()),
                         trainable=sum(g['trainable'] for g in groups.values()))
    return groups
