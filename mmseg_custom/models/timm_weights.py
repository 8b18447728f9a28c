"""Finding and reading weights for timm trunks (``TimmViT``): DINOv3 in its three layouts, and any
timm model's own hub file.

Layouts, recognised by their keys and converted in one place (``to_timm_layout``):

* timm's hub file (``model.safetensors``): timm's keys, loaded as they are;
* Meta's official DINOv3 ``.pth`` (``storage_tokens``, ``blocks.N.attn.qkv.bias_mask``,
  ``rope_embed.periods``) and official DINOv2 ``.pth``: converted by timm's own
  ``checkpoint_filter_fn`` of the model's family;
* a Hugging Face transformers folder (``config.json`` + ``model.safetensors``): DINOv3
  (``layer.N.attention.q_proj``...) is rewritten to Meta's layout here, DINOv2 by ``weights.py``,
  then as above.

RoPE periods: Meta's files store ``rope_embed.periods`` in bfloat16; timm (and transformers)
compute them in float32 from the base (100): ``base ** (2 i / (head_dim / 2))``. We use the
computed ones and check the stored ones agree to bfloat16 precision (relative 2^-8).

Nothing is downloaded: names resolve to files in the local caches, and a missing file raises one
error naming the file, where it comes from and where to put it. Files are read with safetensors or
``torch.load(weights_only=True)``.
"""
import json
import logging
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .weights import read_state_dict, to_official_layout

logger = logging.getLogger(__name__)

# name -> (timm model, Meta's file, Hugging Face transformers repo)
DINOV3 = {
    'dinov3_small': ('vit_small_patch16_dinov3', 'dinov3_vits16_pretrain_lvd1689m-08c60483.pth',
                     'facebook/dinov3-vits16-pretrain-lvd1689m'),
    'dinov3_small_plus': ('vit_small_plus_patch16_dinov3',
                          'dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth',
                          'facebook/dinov3-vits16plus-pretrain-lvd1689m'),
    'dinov3_base': ('vit_base_patch16_dinov3', 'dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth',
                    'facebook/dinov3-vitb16-pretrain-lvd1689m'),
    'dinov3_large': ('vit_large_patch16_dinov3', 'dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth',
                     'facebook/dinov3-vitl16-pretrain-lvd1689m'),
    'dinov3_huge_plus': ('vit_huge_plus_patch16_dinov3',
                         'dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth',
                         'facebook/dinov3-vith16plus-pretrain-lvd1689m'),
    'dinov3_7b': ('vit_7b_patch16_dinov3', 'dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth',
                  'facebook/dinov3-vit7b16-pretrain-lvd1689m'),
}
META_FORM = 'https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/'
# Classifier and pooling weights: a dense trunk has none (timm's prune_head drops the modules).
HEAD_PREFIXES = ('head.', 'attn_pool.', 'fc_norm.', 'lm_head.', 'projectors.')


def base_name(name: str) -> str:
    """'vit_small_patch16_dinov3_qkvb.lvd1689m' -> 'vit_small_patch16_dinov3'."""
    return re.sub(r'_qkvb$', '', name.split('.')[0])


def torch_hub_dir() -> str:
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def hf_cache_dir() -> str:
    """The Hugging Face hub cache, as huggingface_hub finds it (read now, not at import)."""
    if os.environ.get('HF_HUB_CACHE'):
        return os.environ['HF_HUB_CACHE']
    if os.environ.get('HF_HOME'):
        return osp.join(os.environ['HF_HOME'], 'hub')
    from huggingface_hub.constants import HF_HUB_CACHE
    return HF_HUB_CACHE


def hf_cached(repo_id: str, filename: str) -> Optional[str]:
    """Path of ``filename`` of ``repo_id`` in the Hugging Face cache, or None (never downloads)."""
    from huggingface_hub import try_to_load_from_cache
    path = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir())
    return path if isinstance(path, str) and osp.isfile(path) else None


def timm_hub_file(model_name: str) -> Tuple[str, List[str]]:
    """timm's hub repo of ``model_name`` (default tag if none given) and its candidate files."""
    import timm
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"timm has no hub weights for {model_name!r}: set "
                         'model.backbone.trunk.pretrained to a local file instead of \'timm\'')
    files = ['model.safetensors', 'pytorch_model.bin']
    if cfg.hf_hub_filename:
        files.insert(0, cfg.hf_hub_filename)
    return cfg.hf_hub_id, files


def resolve_timm_weights(pretrained: str, model_name: str) -> str:
    """Local file or folder of ``pretrained``: a path, 'timm' (timm's hub file of the model) or a
    DINOv3 name such as 'dinov3_small' (Meta's file, timm's or the transformers folder)."""
    if osp.isfile(pretrained) or osp.isdir(pretrained):
        return pretrained
    if pretrained in DINOV3:
        return _resolve_dinov3(pretrained, model_name)
    if pretrained == 'timm':
        repo, files = timm_hub_file(model_name)
        for f in files:
            path = hf_cached(repo, f)
            if path:
                return path
        raise FileNotFoundError(
            f'timm weights of {model_name!r} not found: expected {files[0]} of the Hugging Face '
            f'repo {repo} in the cache {hf_cache_dir()}.\nOn a machine with internet access run\n'
            f'  huggingface-cli download {repo} {files[0]}\nand copy the cache folder '
            f'models--{repo.replace("/", "--")} there, or set model.backbone.trunk.pretrained to '
            'the file itself.')
    names = sorted(DINOV3) + ['timm']
    raise FileNotFoundError(
        f'weights {pretrained!r} not found: it is neither an existing file or folder nor one of '
        f'{names}. Set model.backbone.trunk.pretrained to a weights file (.pth/.safetensors), a '
        'Hugging Face model folder, or one of those names.')


def _resolve_dinov3(name: str, model_name: str) -> str:
    timm_name, meta_file, hf_repo = DINOV3[name]
    if base_name(model_name) != timm_name:
        raise ValueError(f'pretrained={name!r} holds {timm_name} weights but the trunk is '
                         f'{model_name!r}: set name={timm_name!r} (or its _qkvb variant)')
    meta_path = osp.join(torch_hub_dir(), meta_file)
    if osp.isfile(meta_path):
        return meta_path
    timm_repo = f'timm/{timm_name}.lvd1689m'
    found = hf_cached(timm_repo, 'model.safetensors')
    if found:
        return found
    hf_config = hf_cached(hf_repo, 'config.json')
    if hf_config and osp.isfile(osp.join(osp.dirname(hf_config), 'model.safetensors')):
        return osp.dirname(hf_config)
    raise FileNotFoundError(
        f'DINOv3 weights {name!r} not found (nothing is downloaded). Any one of these works:\n'
        f'  1. Meta\'s file {meta_file}: request it through Meta\'s download form {META_FORM} and '
        f'put it at\n       {meta_path}\n'
        f'  2. timm\'s model.safetensors of the Hugging Face repo {timm_repo} '
        f'(`huggingface-cli download {timm_repo}`), in the cache {hf_cache_dir()}\n'
        f'  3. the transformers folder of the gated Hugging Face repo {hf_repo} (accept its '
        f'licence, then `huggingface-cli download {hf_repo}`), in the same cache\n'
        'or set model.backbone.trunk.pretrained to the file or folder itself.')


def read_weights(path: str) -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    """State dict of a weights file or a model folder (transformers', or timm's), and the
    transformers config (None otherwise)."""
    if not osp.isdir(path):
        return read_state_dict(path), None
    config_path = osp.join(path, 'config.json')
    if not osp.isfile(config_path):
        raise FileNotFoundError(
            f'{path} is a folder without config.json: a Hugging Face transformers model folder '
            'holds config.json and model.safetensors (as save_pretrained writes them). Copy the '
            'whole folder, or point model.backbone.trunk.pretrained at a weights file.')
    try:
        with open(config_path) as f:
            config = json.load(f)
    except ValueError as e:  # not JSON, or not text: cut off or damaged while copied
        raise ValueError(f'{config_path} is not valid JSON ({e}): the model folder {path} is '
                         'damaged or incomplete. Copy or download the whole folder '
                         'again.') from None
    if 'architecture' in config and 'model_type' not in config:
        config = None  # timm's own folder (save_for_hf): timm's keys
    for name in ('model.safetensors', 'pytorch_model.bin'):
        if osp.isfile(osp.join(path, name)):
            return read_state_dict(osp.join(path, name)), config
    raise FileNotFoundError(f'{path} has config.json but no model.safetensors: copy the whole '
                            'Hugging Face model folder.')


_HF_DINOV3_RULES = [
    (r'^embeddings\.cls_token$', 'cls_token'),
    (r'^embeddings\.register_tokens$', 'storage_tokens'),
    (r'^embeddings\.mask_token$', 'mask_token'),
    (r'^embeddings\.patch_embeddings\.', 'patch_embed.proj.'),
    (r'^layer\.(\d+)\.attention\.o_proj\.', r'blocks.\1.attn.proj.'),
    (r'^layer\.(\d+)\.layer_scale([12])\.lambda1$', r'blocks.\1.ls\2.gamma'),
    (r'^layer\.(\d+)\.mlp\.gate_proj\.', r'blocks.\1.mlp.w1.'),
    (r'^layer\.(\d+)\.mlp\.up_proj\.', r'blocks.\1.mlp.{up}.'),
    (r'^layer\.(\d+)\.mlp\.down_proj\.', r'blocks.\1.mlp.{down}.'),
    (r'^layer\.(\d+)\.', r'blocks.\1.'),
]


def hf_dinov3_to_meta(sd: Dict[str, torch.Tensor], config: dict) -> Dict[str, torch.Tensor]:
    """transformers' DINOv3ViTModel keys -> Meta's official layout (separate q/k/v fused, the
    missing key bias as zeros, gated MLP as w1/w2/w3)."""
    gated = config.get('use_gated_mlp', False)
    up, down = ('w2', 'w3') if gated else ('fc1', 'fc2')
    out, qkv = {}, {}
    for k, v in sd.items():
        k = re.sub(r'^(dinov3_vit\.|model\.)?(model\.)?', '', k, count=1)
        m = re.match(r'^layer\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$', k)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
            continue
        for pattern, repl in _HF_DINOV3_RULES:
            if re.match(pattern, k):
                k = re.sub(pattern, repl.format(up=up, down=down), k)
                break
        out[k] = v
    for (i, kind), parts in qkv.items():
        if kind == 'weight':
            out[f'blocks.{i}.attn.qkv.weight'] = torch.cat([parts['q'], parts['k'], parts['v']])
        else:  # the key bias is absent (fixed at zero): Meta masks it
            q = parts['q']
            out[f'blocks.{i}.attn.qkv.bias'] = torch.cat([q, parts.get('k', torch.zeros_like(q)),
                                                         parts.get('v', torch.zeros_like(q))])
    return out


def to_timm_layout(sd: Dict[str, torch.Tensor], model: nn.Module, source: str,
                   config: Optional[dict] = None) -> Dict[str, torch.Tensor]:
    """Convert a state dict in any supported layout to ``model``'s (a timm model) keys."""
    if config is not None:
        model_type = config.get('model_type', '')
        if model_type == 'dinov3_vit':
            check_hf_config(config, model, source)
            sd = hf_dinov3_to_meta(sd, config)
        elif model_type == 'dinov2':
            sd = to_official_layout(sd)
        else:
            raise ValueError(f'{source}: config.json has model_type {model_type!r}; transformers '
                             "folders are read for 'dinov3_vit' and 'dinov2'. Use timm's or the "
                             'official weights file instead.')
    check_patch_size(sd, model, source)
    if 'storage_tokens' in sd:
        check_meta_dinov3(sd, model, source)
    family = sys.modules[type(model).__module__]
    sd = family.checkpoint_filter_fn(sd, model)
    return {k: v for k, v in sd.items() if not k.startswith(HEAD_PREFIXES)}


def check_hf_config(config: dict, model: nn.Module, source: str):
    p = model.patch_embed.patch_size[0]
    rope = getattr(model, 'rope', None)
    expected = dict(patch_size=p, hidden_size=model.embed_dim, num_hidden_layers=len(model.blocks),
                    num_register_tokens=model.num_prefix_tokens - 1)
    if rope is not None and getattr(rope, 'temperature', None):
        expected['rope_theta'] = rope.temperature
    bad = {k: (config.get(k), v) for k, v in expected.items()
           if k in config and config[k] != v}
    if bad:
        arch = getattr(model, 'pretrained_cfg', {}).get('architecture')
        raise ValueError(f'{source}/config.json contradicts the trunk {arch}: '
                         + ', '.join(f'{k}={a} (trunk: {b})' for k, (a, b) in bad.items())
                         + '. Set model.backbone.trunk.name to the matching timm model.')


def check_patch_size(sd: Dict[str, torch.Tensor], model: nn.Module, source: str):
    """timm would silently resample a patch embedding of another size: refuse instead."""
    w = sd.get('patch_embed.proj.weight')
    expected = tuple(model.patch_embed.proj.weight.shape[-2:])
    if w is not None and tuple(w.shape[-2:]) != expected:
        raise ValueError(f'{source}: weights of patch size {tuple(w.shape[-2:])}, the trunk has '
                         f'patch size {expected}. Use the timm model of the weights\' patch size.')


def check_meta_dinov3(sd: Dict[str, torch.Tensor], model: nn.Module, source: str):
    """Meta's DINOv3 file: no query/value bias dropped silently; stored RoPE periods agree."""
    attn = model.blocks[0].attn
    if getattr(attn, 'q_bias', None) is None:
        bias = sd.get('blocks.0.attn.qkv.bias')
        if bias is not None and bias.abs().max() > 0:
            raise ValueError(f'{source} has non-zero qkv biases, the trunk has none: use the '
                             '_qkvb variant of the timm model name.')
    periods = next((v for k, v in sd.items() if k.endswith('rope_embed.periods')), None)
    rope = getattr(model, 'rope', None)
    if periods is not None and rope is not None and hasattr(rope, 'periods'):
        computed = rope._compute_periods()  # what timm uses, float32 (not on the meta device)
        if periods.shape != computed.shape:
            raise ValueError(f'{source}: RoPE periods of shape {tuple(periods.shape)}, the trunk '
                             f'computes {tuple(computed.shape)}: another head dimension.')
        rel = ((periods.float() - computed).abs() / computed).max().item()
        logger.info(f'{source}: stored RoPE periods vs computed: max relative difference {rel:.2e}')
        if rel > 2 ** -8:
            raise ValueError(f'{source}: stored RoPE periods differ from the trunk\'s (relative '
                             f'{rel:.1e}): another RoPE base; check the timm model name.')


def load_timm_weights(model: nn.Module, pretrained: str, model_name: str) -> str:
    """Load ``pretrained`` (see ``resolve_timm_weights``) into the timm ``model``; one error
    naming the file and what does not match. Returns the path read."""
    path = resolve_timm_weights(pretrained, model_name)
    sd, config = read_weights(path)
    sd = to_timm_layout(sd, model, path, config)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f'{k}: file {tuple(v.shape)} vs trunk {tuple(own[k].shape)}'
              for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        raise RuntimeError(
            f'weights {path} do not fit the timm model {model_name!r}: missing {missing[:6]}, '
            f'unexpected {unexpected[:6]}, shape mismatches {shapes[:4]}. It holds another '
            'architecture: set model.backbone.trunk.name to the model the weights are for.')
    model.load_state_dict(sd)
    return path
