"""Content-aware token sharing (CTS; Lu, de Geus, Dubbelman, CVPR 2023) for a frozen trunk.

A policy network scores every *superpatch* (2x2 neighbouring patches) of the image for "holds one
class"; the S best per image become one token each, so every block runs on ``N - 3S`` patch tokens.
As in the official implementation (tue-mps/cts-segmenter, ``segm/model/efficient.py``), a shared
token is the trunk's patch embedding of the superpatch's image region downsampled 2x (bilinear,
scale 0.5, which is the 2x2 mean) plus the superpatch's position (absolute embeddings: the 2x2 mean
of the 4 patches' embeddings, as the official bilinear downsampling of the embedding grid gives;
RoPE: the superpatch centre). The sequence is ``[prefix, kept patches (raster order), shared
superpatches (raster order)]``, the official order. Before ``to_map`` every shared token is copied
to its 4 patch positions, so whatever reads the maps sees full grids.

The policy sees what the official PolicyNet was trained on (``policynet/policynet/data_*.py``):
RGB images normalised as (x - 127.5) / 127.5, 32 px per superpatch. ``TokenSharing`` receives the
images normalised by the segmentor's data preprocessor (its ``input_mean``/``input_std``); the
policy undoes that and applies its own normalisation (``CTSPolicyNet.prepare``). A policy file
written by ``tools/train_cts_policy.py`` states its normalisation, its superpatch size and the
trunk patch size it was trained for; a file that contradicts the config is refused.

Trunk interface for sharing (DINOv2 and TimmViT implement it; a new trunk adds the same two
methods):

* ``pad(x, value=0.0)``: the image (or a label map, ``value=255``) as the trunk patchifies it, so
  the policy and its training labels see the trunk's superpatch grid.
* ``tokenize_shared(x, shared) -> (tokens, plan)``: like ``tokenize`` but with the superpatches
  ``shared`` (B, S) shared; ``plan`` (a :class:`SharePlan`) replaces ``grid`` in ``apply_block``.
  A RoPE trunk rotates each token by the angles of its position in ``plan.centres()`` (patch
  units; a kept patch (r, c) at (r + 0.5, c + 0.5), a superpatch at the centre of its 4 patches).
"""
import copy
import math
import os.path as osp
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..weights import read_weights_file

Grid = Tuple[int, int]
Norm = Sequence[float]
# The official PolicyNet's input normalisation, in RGB pixel values: (x - 127.5) / 127.5.
OFFICIAL_MEAN = (127.5, 127.5, 127.5)
OFFICIAL_STD = (127.5, 127.5, 127.5)


@dataclass
class SharePlan:
    """Which superpatches of each image share a token, and where every token sits.

    Args:
        grid: Full patch grid (h, w). Superpatches tile its top-left (h // 2, w // 2) * 2 part;
            an odd last row/column is never shared.
        shared: (B, S) flat superpatch indices in the (h // 2, w // 2) grid, ascending per row.
        num_prefix_tokens: cls/register tokens at the start of the sequence (never shared).
    """
    grid: Grid
    shared: torch.Tensor
    num_prefix_tokens: int

    def __post_init__(self):
        h, w = self.grid
        gh, gw = h // 2, w // 2
        B, S = self.shared.shape
        dev = self.shared.device
        si, sj = self.shared // gw, self.shared % gw
        # (B, S, 4): the 4 patch positions of each shared superpatch, raster order within it.
        quad = torch.stack([(2 * si) * w + 2 * sj, (2 * si) * w + 2 * sj + 1,
                            (2 * si + 1) * w + 2 * sj, (2 * si + 1) * w + 2 * sj + 1], dim=-1)
        keep = torch.ones(B, h * w, dtype=torch.bool, device=dev)
        # A tensor source, not the scalar False: torch.jit's tracer (ONNX export) has no
        # scatter_ overload for a bool scalar.
        keep.scatter_(1, quad.flatten(1), torch.zeros_like(quad.flatten(1), dtype=torch.bool))
        # Every row keeps the same count, so the row-major nonzero list reshapes to (B, K).
        self.kept = keep.nonzero()[:, 1].view(B, h * w - 4 * S)
        K = self.kept.shape[1]
        # Token (within the patch part of the shared sequence) that holds each grid position.
        index = torch.empty(B, h * w, dtype=torch.long, device=dev)
        index.scatter_(1, self.kept, torch.arange(K, device=dev).expand(B, K))
        shared_pos = torch.arange(K, K + S, device=dev).view(1, S, 1).expand(B, S, 4)
        index.scatter_(1, quad.flatten(1), shared_pos.flatten(1))
        self.unshare_index = index
        self.quad = quad

    @property
    def super_grid(self) -> Grid:
        return self.grid[0] // 2, self.grid[1] // 2

    @property
    def num_shared(self) -> int:
        return self.shared.shape[1]

    def gather(self, patch_tokens: torch.Tensor, super_tokens: torch.Tensor) -> torch.Tensor:
        """Shared patch sequence (B, N - 3S, D) from per-patch values (B or 1, h*w, D) and
        per-superpatch values (B or 1, gh*gw, D): kept patches, then shared superpatches."""
        B = self.kept.shape[0]
        kept = _take(patch_tokens, self.kept, B)
        return torch.cat((kept, _take(super_tokens, self.shared, B)), dim=1)

    def unshare(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P + N - 3S, D) -> (B, P + h*w, D): each shared token copied to its 4 positions."""
        p = self.num_prefix_tokens
        patches = _take(tokens[:, p:], self.unshare_index, tokens.shape[0])
        return torch.cat((tokens[:, :p], patches), dim=1)

    def centres(self) -> torch.Tensor:
        """(B, N - 3S, 2) float (row, col) centres of the patch tokens in patch units."""
        w = self.grid[1]
        kept = torch.stack((self.kept // w, self.kept % w), dim=-1).float() + 0.5
        gw = self.super_grid[1]
        shared = torch.stack((self.shared // gw, self.shared % gw), dim=-1).float() * 2 + 1
        return torch.cat((kept, shared), dim=1)


def _take(values: torch.Tensor, index: torch.Tensor, batch: int) -> torch.Tensor:
    values = values.expand(batch, -1, -1)
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


def unshared_map(trunk: nn.Module, tokens: torch.Tensor,
                 grid: Union[Grid, SharePlan]) -> torch.Tensor:
    """``trunk.to_map`` for plain or shared sequences (shared tokens copied to their 4 cells)."""
    if isinstance(grid, SharePlan):
        tokens, grid = grid.unshare(tokens), grid.grid
    return trunk.to_map(tokens, grid)


def num_shared_superpatches(reduction: float, grid: Grid) -> int:
    """Superpatches S that remove ``reduction`` of the h*w patch tokens (each removes 3), rounded
    up as the official 30 % setting (1024 tokens: 103 shared), at most all superpatches."""
    h, w = grid
    return min(math.ceil(reduction * h * w / 3 - 1e-9), (h // 2) * (w // 2))


def policy_input(x: torch.Tensor, super_grid: Grid, patch_size: int,
                 policy_stride: int = 32) -> torch.Tensor:
    """The superpatch-tiled region of a padded image, resized so that the policy's output grid is
    the superpatch grid: one policy cell per superpatch (28 px -> 32 px for patch 14)."""
    gh, gw = super_grid
    side = 2 * patch_size
    x = x[..., :gh * side, :gw * side]
    if side == policy_stride:
        return x
    return F.interpolate(x, size=(gh * policy_stride, gw * policy_stride), mode='bilinear',
                         align_corners=False)


def renormalize(x: torch.Tensor, from_mean: Norm, from_std: Norm, to_mean: Norm,
                to_std: Norm) -> torch.Tensor:
    """Images normalised as (pixel - from_mean) / from_std, normalised as (pixel - to_mean) /
    to_std instead (per channel; means and stds in pixel values)."""
    def channels(v):
        return torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)

    from_std, to_std = channels(from_std), channels(to_std)
    return x * (from_std / to_std) + (channels(from_mean) - channels(to_mean)) / to_std


def superpatch_labels(labels: torch.Tensor, super_grid: Grid, patch_size: int,
                      ignore_index: int = 255) -> torch.Tensor:
    """Policy targets (B, gh, gw) from label maps (B, H, W) padded as the trunk pads images.

    1 where the labelled pixels of a superpatch all share one class, 0 where they do not,
    ``ignore_index`` where it has no labelled pixel.
    """
    gh, gw = super_grid
    side = 2 * patch_size
    lab = labels[:, None, :gh * side, :gw * side].float()
    valid = lab != ignore_index
    big = float(ignore_index + 1)
    top = F.max_pool2d(torch.where(valid, lab, torch.full_like(lab, -1.0)), side)
    bottom = -F.max_pool2d(torch.where(valid, -lab, torch.full_like(lab, -big)), side)
    any_valid = F.max_pool2d(valid.float(), side) > 0
    target = (top == bottom).long()
    target[~any_valid] = ignore_index
    return target[:, 0]


@MODELS.register_module()
class CTSPolicyNet(BaseModule):
    """CTS policy network: EfficientNet-Lite0 features at stride 32, then a 1x1 conv to 2 classes
    (0: several classes, 1: one class). Parameter names match the official ``PolicyNet``
    (``backbone.*`` = timm's ``features_only`` model, ``head.*``), so its checkpoints load.

    Its input (:meth:`prepare`): RGB images normalised as (pixel - mean) / std, each superpatch
    resized to ``stride`` (32) px, one output cell per superpatch.

    Args:
        pretrained (str | None): Local file: a policy checkpoint (``backbone.*``/``head.*``: from
            ``tools/train_cts_policy.py``, or an official CTS PolicyNet ``model.pth``) or timm
            ImageNet ``efficientnet_lite0`` weights (backbone only; the head stays random). None:
            random weights. Never downloaded. A file's stated normalisation and superpatch size
            must equal ``mean``/``std``/``stride`` (an official ``model.pth`` states none: it is
            taken as the official setting), and its trunk patch size the trunk's.
        mean (sequence of 3 floats): Mean of its input normalisation, RGB pixel values. Default
            (127.5, 127.5, 127.5), the official PolicyNet's.
        std (sequence of 3 floats): Std of its input normalisation. Default (127.5, 127.5,
            127.5), the official PolicyNet's.
    """
    stride = 32  # px per output cell, so the size of a superpatch in its input

    def __init__(self, pretrained: Optional[str] = None, mean: Norm = OFFICIAL_MEAN,
                 std: Norm = OFFICIAL_STD, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        import timm
        self.pretrained = pretrained
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        # The trunk patch size its weights file was trained for (None: not stated); TokenSharing
        # compares it with its trunk's.
        self.trained_patch_size = None
        self.backbone = timm.create_model('efficientnet_lite0', pretrained=False,
                                          features_only=True, out_indices=(4, ))
        self.head = nn.Conv2d(self.backbone.feature_info.channels()[-1], 2, 1)

    @classmethod
    def find_weights(cls, cfg: dict) -> Optional[str]:
        """The local policy file of ``cfg`` (read once to check it; never downloaded), or None.
        The launchers' preflight calls it, as it calls the trunks'."""
        if not cfg.get('pretrained'):
            return None
        read_policy_weights(cfg['pretrained'], cfg.get('mean', OFFICIAL_MEAN),
                            cfg.get('std', OFFICIAL_STD), cls.stride)
        return cfg['pretrained']

    def init_weights(self):
        if self.pretrained is None:
            if self.init_cfg:
                return super().init_weights()
            # timm's constructor initialised it; BaseModule's pass would only log every
            # parameter to the console outside a runner (tools/train_cts_policy.py).
            return
        state_dict, meta = read_policy_weights(self.pretrained, self.mean, self.std, self.stride)
        self.trained_patch_size = meta.get('patch_size')
        if not any(k.startswith('backbone.') for k in state_dict):
            state_dict = {'backbone.' + k: v for k, v in state_dict.items()}
            own = self.state_dict()
            state_dict = {k: v for k, v in state_dict.items() if k in own}  # drop the classifier
            missing, unexpected = self.load_state_dict(state_dict, strict=False)
            missing = [k for k in missing if not k.startswith('head.')]
        else:
            missing, unexpected = self.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise RuntimeError(
                f'CTS policy weights {self.pretrained!r} do not fit EfficientNet-Lite0 + a 2-class '
                f'head: missing {missing[:6]}, unexpected {unexpected[:6]}. Use a file written by '
                'tools/train_cts_policy.py, an official CTS PolicyNet model.pth, or timm '
                'efficientnet_lite0 weights.')

    def prepare(self, x: torch.Tensor, super_grid: Grid, patch_size: int,
                input_mean: Optional[Norm], input_std: Optional[Norm]) -> torch.Tensor:
        """Its input from a padded image batch normalised as (pixel - input_mean) / input_std:
        the superpatch-tiled region (:func:`policy_input`) in its own normalisation. None (both):
        the images are taken as they are (a policy without weights file)."""
        x = x[..., :super_grid[0] * 2 * patch_size, :super_grid[1] * 2 * patch_size]
        if input_mean is not None:
            x = renormalize(x, input_mean, input_std, self.mean, self.std)
        return policy_input(x, super_grid, patch_size, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2, H / 32, W / 32)."""
        return self.head(self.backbone(x)[-1])


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold each BatchNorm (timm's BatchNormAct2d: BN -> drop -> act) into the conv registered
    just before it in the same parent, which is the order timm's EfficientNet blocks run them in
    (a test checks the folded policy against the original). In place; eval-mode semantics."""
    for parent in list(module.modules()):
        conv_name = None
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                conv_name = name
            elif isinstance(child, nn.BatchNorm2d) and conv_name is not None:
                setattr(parent, conv_name, fuse_conv_bn_eval(getattr(parent, conv_name), child))
                rest = [m for m in (getattr(child, 'drop', None), getattr(child, 'act', None))
                        if m is not None]
                setattr(parent, name, nn.Sequential(*rest))
                conv_name = None
    return module


def read_policy_weights(path: str, mean: Norm = OFFICIAL_MEAN, std: Norm = OFFICIAL_STD,
                        stride: int = CTSPolicyNet.stride) -> Tuple[dict, dict]:
    """(state dict, settings) of a policy file, its settings checked against the config's
    ``mean``/``std``/``stride``.

    Settings: the ``meta`` that ``tools/train_cts_policy.py`` writes (``mean``, ``std``,
    ``superpatch_px``, ``patch_size``); for a policy without it (the official PolicyNet's
    ``model.pth``, a bare state dict), the official input ((x - 127.5) / 127.5, 32 px
    superpatches; no patch size: it sees its 32 px superpatches whatever the trunk's patch); for
    timm EfficientNet weights (an initialisation, no ``head.*``), none.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'CTS policy checkpoint {path!r} does not exist. Train one on the config\'s dataset '
            'with `python tools/train_cts_policy.py CONFIG --out ' + path + '` (or copy an '
            'official CTS PolicyNet model.pth there), or set '
            'model.backbone.token_sharing.policy.pretrained to its path. Nothing is downloaded.')
    obj = read_weights_file(path, kind='CTS policy file', advice=(
        'It was probably cut off or damaged while being written or copied. Delete it and train '
        'it again with tools/train_cts_policy.py, or copy it again.'))
    state_dict = obj['state_dict'] if isinstance(obj.get('state_dict'), dict) else obj
    meta = dict(obj.get('meta') or {}) if state_dict is not obj else {}
    if meta and ('mean' not in meta or 'std' not in meta):
        raise ValueError(
            f'CTS policy file {path} does not state the input normalisation it was trained with '
            '(it was written before tools/train_cts_policy.py recorded it, when the policy saw '
            "the data preprocessor's normalisation). Train it again with "
            '`python tools/train_cts_policy.py CONFIG --out ' + path + '`.')
    if not any(k.startswith('head.') for k in state_dict):
        return state_dict, {}  # EfficientNet weights: an initialisation, trained for nothing
    if not meta:  # the official PolicyNet's model.pth (a bare state dict) states nothing
        meta = dict(mean=OFFICIAL_MEAN, std=OFFICIAL_STD, superpatch_px=CTSPolicyNet.stride)
    expected = dict(mean=tuple(mean), std=tuple(std), superpatch_px=stride)
    for key, value in expected.items():
        stored = meta.get(key)
        if stored is not None and not _same(stored, value):
            raise ValueError(
                f'CTS policy file {path} was trained with {key} {_show(stored)}, but the config '
                f'gives the policy {key} {_show(value)} (model.backbone.token_sharing.policy). '
                'A policy must see the input it was trained on: set the config to the file\'s '
                'value, or train a policy for this config with `python tools/train_cts_policy.py '
                'CONFIG --out ' + path + '`.')
    return state_dict, meta


def _same(a, b) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-6)


def _show(value) -> str:
    return str(list(value)) if isinstance(value, (list, tuple)) else str(value)


@MODELS.register_module()
class TokenSharing(BaseModule):
    """Picks the superpatches to share with a frozen policy and tokenizes through the trunk.

    Args:
        policy (dict): Policy network config, e.g. ``dict(type='CTSPolicyNet', pretrained=...)``.
        reduction (float): Fraction of patch tokens removed, in [0, 0.75); each shared superpatch
            removes 3. 0 disables sharing (the plain path, policy not run). Default 0.3.
        input_mean (sequence of 3 floats | None): How the images it receives are normalised:
            the segmentor's data preprocessor's mean (RGB pixel values), which the policy undoes
            before it applies its own normalisation. A config takes it from its data
            preprocessor (``{{_base_.model.data_preprocessor.mean}}``). None: the policy gets the
            images as they are, which only a policy without weights file may (benchmarks, tests).
        input_std (sequence of 3 floats | None): The data preprocessor's std, likewise.
    """

    def __init__(self, policy: dict, reduction: float = 0.3, input_mean: Optional[Norm] = None,
                 input_std: Optional[Norm] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if not 0 <= reduction < 0.75:
            raise ValueError(f'TokenSharing: reduction must be in [0, 0.75) (a fraction of the '
                             f'tokens; 0 disables), got {reduction}')
        if (input_mean is None) != (input_std is None):
            raise ValueError('TokenSharing: give both input_mean and input_std (the data '
                             "preprocessor's mean and std), or neither.")
        self.reduction = reduction
        self.input_mean = None if input_mean is None else tuple(float(v) for v in input_mean)
        self.input_std = None if input_std is None else tuple(float(v) for v in input_std)
        self.policy = MODELS.build(policy)
        self.requires_grad_(False)
        self.eval()
        # Inference copy of the frozen policy (a tuple, so not a submodule: no state_dict keys).
        self._fast_policy = None
        # On the policy itself: fires whether its weights are loaded through it or a parent.
        self.policy.register_load_state_dict_post_hook(lambda *_: self._drop_fast_policy())

    def init_weights(self):
        if self.input_mean is None and getattr(self.policy, 'pretrained', None):
            raise ValueError(
                f'TokenSharing: the policy loads {self.policy.pretrained}, but the config does not '
                'say how the images it receives are normalised, so the policy cannot be given the '
                'input it was trained on. Set model.backbone.token_sharing.input_mean and '
                'input_std to the data preprocessor\'s mean and std, e.g. input_mean='
                '{{_base_.model.data_preprocessor.mean}}.')
        super().init_weights()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: BN statistics of the policy stay as trained

    def _drop_fast_policy(self):
        self._fast_policy = None

    def _apply(self, fn, *args, **kwargs):
        self._drop_fast_policy()  # .to(), .cuda(), .half(): rebuilt from the new weights
        return super()._apply(fn, *args, **kwargs)

    def run_policy(self, x: torch.Tensor) -> torch.Tensor:
        """The policy's logits through a copy with BatchNorm folded into the convs and
        channels-last tensors: the same function in 0.38x the CPU time (measured: batch 2,
        576 px, one thread). While tracing (ONNX export), the policy itself: the copy cannot be
        built inside a trace (``deepcopy`` of a buffer is not traced), and runtimes fold
        BatchNorm themselves."""
        if torch.jit.is_tracing():
            return self.policy(x)
        if self._fast_policy is None:
            fast = fold_batchnorm(copy.deepcopy(self.policy).eval())
            self._fast_policy = (fast.to(memory_format=torch.channels_last), )
        return self._fast_policy[0](x.contiguous(memory_format=torch.channels_last))

    def policy_logits(self, x: torch.Tensor, grid: Grid, patch_size: int) -> torch.Tensor:
        """(B, 2, gh, gw) policy logits for a padded image batch x (the trunk's (h, w) patch grid
        ``grid``), given the input it was trained on (:meth:`CTSPolicyNet.prepare`)."""
        trained = getattr(self.policy, 'trained_patch_size', None)
        if trained is not None and trained != patch_size:
            raise ValueError(
                f'CTS policy file {self.policy.pretrained} was trained for patch size {trained} '
                f'({2 * trained} px superpatches), but the config\'s trunk has patch size '
                f'{patch_size}. Train a policy for this config with `python '
                'tools/train_cts_policy.py CONFIG --out PATH` and point '
                'model.backbone.token_sharing.policy.pretrained at it.')
        super_grid = (grid[0] // 2, grid[1] // 2)
        logits = self.run_policy(self.policy.prepare(x, super_grid, patch_size, self.input_mean,
                                                     self.input_std))
        assert logits.shape[-2:] == super_grid, (logits.shape, super_grid)
        return logits

    def select(self, x: torch.Tensor, grid: Grid, patch_size: int, num: int) -> torch.Tensor:
        """(B, num) superpatch indices with the highest one-class probability, ascending."""
        logits = self.policy_logits(x, grid, patch_size)
        scores = logits.float().softmax(dim=1)[:, 1].flatten(1)
        return scores.topk(num, dim=1).indices.sort(dim=1).values

    def forward(self, trunk: nn.Module,
                x: torch.Tensor) -> Tuple[torch.Tensor, Union[Grid, SharePlan]]:
        """``trunk.tokenize(x)`` with the top superpatches shared: (tokens, plan or grid)."""
        if self.reduction == 0:
            return trunk.tokenize(x)
        x = trunk.pad(x)
        grid = (x.shape[-2] // trunk.patch_size, x.shape[-1] // trunk.patch_size)
        num = num_shared_superpatches(self.reduction, grid)
        if num == 0:
            return trunk.tokenize(x)
        return trunk.tokenize_shared(x, self.select(x, grid, trunk.patch_size, num))
