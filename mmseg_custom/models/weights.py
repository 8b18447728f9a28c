"""Finding, reading and converting DINOv2 weights (official, timm and Hugging Face layouts).

All three layouts are converted to the official one, recognised by their keys, in one place
(``to_official_layout``). Files are read with ``weights_only=True`` or safetensors: never unpickled.
They are checked as checkpoints are (``load_from_local``: the zip archive's CRCs, which torch does
not check); a missing, empty, truncated or damaged file is an error naming it and the fix.
"""
import os
import os.path as osp
import re
from typing import Dict

import torch
from mmengine.dist import barrier, is_distributed

from ..engine.checkpoint import CheckpointError, damaged_file_error, load_from_local

BASE_URL = 'https://dl.fbaipublicfiles.com/dinov2'
SIZE_CODES = {'small': 's', 'base': 'b', 'large': 'l', 'giant': 'g'}


def official_url(name: str) -> str:
    """URL of an official checkpoint: ``name`` is 'small' ... 'giant', optionally + '_reg4'."""
    size, _, reg = name.partition('_')
    if size not in SIZE_CODES or reg not in ('', 'reg4'):
        raise ValueError(f'unknown DINOv2 weights name {name!r}: use one of '
                         f'{[s + r for s in SIZE_CODES for r in ("", "_reg4")]}, a path or a URL')
    arch = f'dinov2_vit{SIZE_CODES[size]}14'
    return f'{BASE_URL}/{arch}/{arch}{"_" + reg if reg else ""}_pretrain.pth'


def hub_cache_dir() -> str:
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def resolve_weights(pretrained: str) -> str:
    """Local path of ``pretrained`` (a path, a URL or an official name), downloading if needed."""
    if osp.isfile(pretrained):
        return pretrained
    url = pretrained
    if not re.match(r'^https?://', pretrained):
        if '/' in pretrained or osp.splitext(pretrained)[1]:
            raise FileNotFoundError(
                f'DINOv2 weights file {pretrained!r} does not exist. Put the file there, or set '
                "model.backbone.trunk.pretrained to a path, a URL or a name such as 'small'.")
        url = official_url(pretrained)
    path = osp.join(hub_cache_dir(), osp.basename(url))
    if osp.isfile(path):
        return path
    os.makedirs(osp.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, progress=True)
    except Exception as e:  # offline, proxy, HTTP error: all end the same way for the user
        raise FileNotFoundError(
            f'Could not download DINOv2 weights {url} ({type(e).__name__}: {e}).\n'
            f'Download that file on a machine with internet access and put it at\n  {path}\n'
            'or point model.backbone.trunk.pretrained (e.g. --cfg-options '
            'model.backbone.trunk.pretrained=/path/to/file.pth) at a local copy. Official, timm '
            'and Hugging Face (.safetensors) layouts are all accepted.') from None
    return path


WEIGHTS_ADVICE = (
    'It was probably cut off or damaged while being downloaded or copied. Delete it and download '
    'or copy it again (weights this package downloaded into the torch hub cache are downloaded '
    'again on the next run).')


def read_weights_file(path: str, kind: str = 'Weights file',
                      advice: str = WEIGHTS_ADVICE) -> dict:
    """Everything a .pth/.bin/.safetensors file holds (a .pth's whole dict), checked, without
    unpickling code.

    A .pth/.bin goes through :func:`load_from_local` (zip CRCs, safe formats only). A
    .safetensors file has no checksums: a cut-off file or a damaged header is found, a byte
    flipped inside its tensor data is not.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: it is empty, truncated, damaged or not in a safe format; the message
            starts with ``'{kind} {path}'`` and ends with ``advice`` where the bytes are at fault.
    """
    if not path.endswith('.safetensors'):
        return load_from_local(path, map_location='cpu', kind=kind, advice=advice)
    from safetensors.torch import load_file
    if not osp.isfile(path):
        raise FileNotFoundError(f'{kind} {path} does not exist.')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'{kind} {path} is empty (0 bytes). {advice}')
    try:
        return load_file(path, device='cpu')
    except Exception as e:  # safetensors raises its own error type, naming no file
        raise damaged_file_error(path, f'its safetensors data cannot be read ({e})', kind,
                                 advice) from None


def read_state_dict(path: str, kind: str = 'Weights file',
                    advice: str = WEIGHTS_ADVICE) -> Dict[str, torch.Tensor]:
    """Tensors of a .pth/.bin/.safetensors file (:func:`read_weights_file`), the state dict
    taken out of a checkpoint's ``state_dict``/``model``/``teacher`` entry."""
    obj = read_weights_file(path, kind, advice)
    for key in ('state_dict', 'model', 'teacher'):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return obj


def _from_timm(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    if 'reg_token' in sd:
        # timm's reg4 models keep no position embedding for cls; a zero one is equivalent.
        out['register_tokens'] = sd.pop('reg_token')
        pos = sd.pop('pos_embed')
        out['pos_embed'] = torch.cat((pos.new_zeros(1, 1, pos.shape[-1]), pos), dim=1)
    # timm packs SwiGLU as fc1 (both gates, 2x hidden out) and fc2; a plain MLP has fc1.out == fc2.in.
    fc1 = sd.get('blocks.0.mlp.fc1.weight')
    swiglu = fc1 is not None and fc1.shape[0] == 2 * sd['blocks.0.mlp.fc2.weight'].shape[1]
    for k, v in sd.items():
        if swiglu:
            k = k.replace('mlp.fc1.', 'mlp.w12.').replace('mlp.fc2.', 'mlp.w3.')
        out[k] = v
    return out


_HF_RULES = [
    (r'^embeddings\.cls_token$', 'cls_token'),
    (r'^embeddings\.mask_token$', 'mask_token'),
    (r'^embeddings\.register_tokens$', 'register_tokens'),
    (r'^embeddings\.position_embeddings$', 'pos_embed'),
    (r'^embeddings\.patch_embeddings\.projection\.', 'patch_embed.proj.'),
    (r'^encoder\.layer\.(\d+)\.attention\.output\.dense\.', r'blocks.\1.attn.proj.'),
    (r'^encoder\.layer\.(\d+)\.layer_scale1\.lambda1$', r'blocks.\1.ls1.gamma'),
    (r'^encoder\.layer\.(\d+)\.layer_scale2\.lambda1$', r'blocks.\1.ls2.gamma'),
    (r'^encoder\.layer\.(\d+)\.mlp\.weights_in\.', r'blocks.\1.mlp.w12.'),
    (r'^encoder\.layer\.(\d+)\.mlp\.weights_out\.', r'blocks.\1.mlp.w3.'),
    (r'^encoder\.layer\.(\d+)\.', r'blocks.\1.'),
    (r'^layernorm\.', 'norm.'),
]


def _from_hf(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    sd = {k[len('dinov2.'):] if k.startswith('dinov2.') else k: v for k, v in sd.items()}
    out, qkv = {}, {}
    for k, v in sd.items():
        m = re.match(r'^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$', k)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
            continue
        if not re.match(r'^(embeddings|encoder|layernorm)\.', k):
            continue  # classifier heads and the like
        for pattern, repl in _HF_RULES:
            if re.match(pattern, k):
                k = re.sub(pattern, repl, k)
                break
        out[k] = v
    for (i, kind), parts in qkv.items():
        out[f'blocks.{i}.attn.qkv.{kind}'] = torch.cat([parts['query'], parts['key'], parts['value']])
    return out


def to_official_layout(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Convert a DINOv2 state dict in the official, timm or Hugging Face layout to the official one."""
    sd = dict(sd)
    if any(k.startswith(('embeddings.', 'dinov2.embeddings.')) for k in sd):
        return _from_hf(sd)
    if 'mask_token' in sd or 'register_tokens' in sd or any('mlp.w12' in k for k in sd):
        return sd  # official
    if 'cls_token' in sd and 'patch_embed.proj.weight' in sd:
        return _from_timm(sd)
    raise ValueError('not a DINOv2 state dict in the official, timm or Hugging Face layout '
                     f'(first keys: {list(sd)[:5]})')


def local_rank() -> int:
    """This process's rank on its node (torchrun and mmengine's Slurm setup set LOCAL_RANK)."""
    return int(os.environ.get('LOCAL_RANK', 0))


def resolve_weights_once_per_node(pretrained: str) -> str:
    """:func:`resolve_weights`, downloading on one process per node while the others wait.

    Without a process group, every process resolves by itself.
    """
    if not is_distributed():
        return resolve_weights(pretrained)
    if local_rank() == 0:
        path = resolve_weights(pretrained)
    barrier()  # a failed download raises on local rank 0, and the launcher stops the others
    if local_rank() != 0:
        path = resolve_weights(pretrained)  # in the hub cache now: no download
    return path


def load_dinov2_weights(pretrained: str) -> Dict[str, torch.Tensor]:
    path = resolve_weights_once_per_node(pretrained)
    return to_official_layout(read_state_dict(path, kind='DINOv2 weights file'))
