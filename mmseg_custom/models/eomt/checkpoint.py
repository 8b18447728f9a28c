"""Official EoMT checkpoints (tue-mps/eomt) in the EoMT segmentor, in one place.

Layouts read: the Lightning ``.ckpt`` (``state_dict`` of ``network.*`` and
``criterion.empty_weight``) and the bare state dict of the published ``pytorch_model.bin`` (same
keys, no ``meta``). ``convert_official_state_dict`` runs as a load_state_dict pre-hook of the
segmentor, so ``init_model``, ``load_from`` and ``tools/test.py`` all read them:

* ``network.encoder.backbone.*`` -> the TimmViT trunk's timm model; a transformers DINOv3 trunk
  (``blocks.N.attention.q_proj``, ``layer_scale1.lambda1``; the official renames ``embeddings`` to
  ``patch_embed`` and ``layer`` to ``blocks``) is converted to timm's layout by the same code that
  reads transformers' DINOv3 folders (``timm_weights.to_timm_layout``). With
  ``delta_weights=True`` the stored trunk is a difference to the pretrained one, which is read from
  the trunk's ``pretrained`` and added.
* ``network.{q,class_head,mask_head,upscale,attn_mask_probs}`` -> ``decode_head.*``.
* ``network.encoder.pixel_{mean,std}``: checked against the data preprocessor (which normalises
  once) and dropped; ``criterion.empty_weight`` is the loss config's ``class_weight``: dropped.

``mmseg.apis.init_model`` reads ``checkpoint['meta']`` unconditionally: files without one load
through ``mmseg_custom.engine.checkpoint.load_for_mmengine``, mmengine's local loader once
``mmseg_custom`` is imported.
"""
import copy
import re

import torch

OFFICIAL_HEAD = re.compile(r'^network\.(q|class_head|mask_head|upscale|attn_mask_probs)\b')
TRUNK = 'network.encoder.backbone.'


def _transformers_to_timm(sd: dict, timm_model) -> dict:
    """The official's transformers trunk keys (DINOv3) -> timm's Eva keys."""
    from ..timm_weights import to_timm_layout
    hf = {}
    for k, v in sd.items():
        if k.startswith('rope_embeddings.'):
            continue  # computed from the config, not learned
        k = re.sub(r'^patch_embed\.', 'embeddings.', k)
        hf[re.sub(r'^blocks\.', 'layer.', k)] = v
    gated = any('.mlp.gate_proj.' in k for k in hf)
    config = dict(model_type='dinov3_vit', use_gated_mlp=gated)
    return to_timm_layout(hf, timm_model, 'the EoMT checkpoint', config)


def _pretrained_trunk(trunk) -> dict:
    """State dict of the trunk's pretrained weights (for delta checkpoints)."""
    if getattr(trunk, 'pretrained', None) is None:
        raise ValueError('EoMT (delta_weights=True): this checkpoint stores the trunk as the '
                         'difference to its pretrained weights, but the trunk config has no '
                         'pretrained file: set model.backbone.trunk.pretrained to the DINOv3 '
                         'weights the checkpoint was trained from.')
    fresh = copy.deepcopy(trunk)
    fresh.init_weights()  # resolves the file and raises naming it when it is missing
    return fresh.model.state_dict()


def _check_normalisation(model, sd: dict, prefix: str):
    pre = getattr(model, 'data_preprocessor', None)
    for name in ('mean', 'std'):
        key = f'{prefix}network.encoder.pixel_{name}'
        if key not in sd:
            continue
        value = sd.pop(key).double().flatten() * 255
        ours = getattr(pre, name, None)
        if ours is None or not torch.allclose(ours.double().flatten().cpu(), value.cpu(),
                                              atol=1e-3):
            raise ValueError(
                f'EoMT checkpoint: pixel_{name} x 255 = {value.tolist()} (RGB), but the data '
                f'preprocessor normalises with {None if ours is None else ours.flatten().tolist()}'
                ': set data_preprocessor mean/std to these, with bgr_to_rgb=True')


def convert_official_state_dict(model, sd: dict, prefix: str = '') -> None:
    """Rename, in place, an official EoMT state dict under ``prefix`` to ``model``'s keys."""
    official = [k for k in sd if k.startswith((prefix + 'network.', prefix + 'criterion.'))]
    if not official:
        return
    from .encoders import ViTSplitEoMTEncoder
    trunk = model.backbone.trunk
    if isinstance(model.backbone, ViTSplitEoMTEncoder) or not hasattr(trunk, 'model'):
        raise ValueError('An official EoMT checkpoint loads into EoMT with an EoMTEncoder on a '
                         f'TimmViT trunk; this model has a {type(model.backbone).__name__} on a '
                         f'{type(trunk).__name__}.')
    _check_normalisation(model, sd, prefix)
    sd.pop(prefix + 'criterion.empty_weight', None)
    trunk_sd = {k[len(prefix + TRUNK):]: sd.pop(k) for k in official
                if k.startswith(prefix + TRUNK)}
    if any(re.match(r'^blocks\.\d+\.attention\.', k) for k in trunk_sd):
        trunk_sd = _transformers_to_timm(trunk_sd, trunk.model)
    if getattr(model, 'delta_weights', False):
        base = _pretrained_trunk(trunk)
        trunk_sd = {k: base[k].to(v.dtype) + v if k in base else v for k, v in trunk_sd.items()}
    for k, v in trunk_sd.items():
        sd[f'{prefix}backbone.trunk.model.{k}'] = v
    for k in official:
        rel = k[len(prefix):]
        if k in sd and OFFICIAL_HEAD.match(rel):
            sd[prefix + 'decode_head.' + rel[len('network.'):]] = sd.pop(k)
