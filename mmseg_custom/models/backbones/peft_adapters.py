"""The PEFT baselines of Rein's table on any trunk: LoRA (through ``peft``), VPT-deep, AdaptFormer.

``PEFTBackbone`` freezes the trunk and trains only its ``adapter``; the adapter is chosen in the
config (``adapter=dict(type='LoRAAdapter' | 'VPTDeep' | 'AdaptFormerAdapter', ...)``) and works on
the trunk interface of ``dinov2.py``: it may change modules of the trunk when built (LoRA) and
wraps each ``apply_block`` call (VPT, AdaptFormer). Defaults give Rein's counts on DINOv2-L
(LoRA 0.79M, AdaptFormer 3.17M, VPT 3.69M).
"""
import inspect
import math
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.profiler import record_function

from .dinov2 import check_indices
from .rein import patch_map, rescale

BlockFn = Callable[[torch.Tensor], torch.Tensor]


class _Adapter(BaseModule):
    """Base: ``attach(trunk)`` once when built, ``forward_block`` around every block."""

    def attach(self, trunk: nn.Module) -> None:
        pass

    def is_trunk_adapter_param(self, name: str) -> bool:
        """Whether a parameter of the trunk (after ``attach``) belongs to the adapter."""
        return False

    def reset(self, trunk: nn.Module) -> None:
        """Re-initialise adapter parts living in the trunk, after the trunk's own init."""

    def forward_block(self, i: int, block: BlockFn, tokens: torch.Tensor,
                      num_prefix_tokens: int) -> torch.Tensor:
        return block(tokens)


@MODELS.register_module()
class LoRAAdapter(_Adapter):
    """LoRA (Hu et al., 2022) injected by Hugging Face ``peft`` into the trunk's linear layers.

    Args:
        r (int): Rank. Default 8 (Rein's table: 0.79M on DINOv2-L with ``qkv``).
        lora_alpha (int): Scaling numerator (scale = lora_alpha / r). Default 8.
        target_modules (Sequence[str]): Names (suffixes) of the trunk's linear layers to adapt.
            Default ``('qkv',)`` (DINOv2's and timm's fused attention input).
        lora_dropout (float): Default 0.
    """

    def __init__(self, r: int = 8, lora_alpha: int = 8,
                 target_modules: Sequence[str] = ('qkv', ), lora_dropout: float = 0.0,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.lora_kwargs = dict(r=r, lora_alpha=lora_alpha, target_modules=list(target_modules),
                                lora_dropout=lora_dropout, bias='none')

    def attach(self, trunk: nn.Module) -> None:
        from peft import LoraConfig, inject_adapter_in_model
        inject_adapter_in_model(LoraConfig(**self.lora_kwargs), trunk)
        # peft wraps each target as <name>.base_layer: pretrained files keep <name>.weight.
        wrapped = [n for n, m in trunk.named_modules() if hasattr(m, 'base_layer')]
        if not wrapped:
            raise ValueError(f'LoRAAdapter: no linear layer of {type(trunk).__name__} matches '
                             f'target_modules {self.lora_kwargs["target_modules"]}')
        trunk.register_load_state_dict_pre_hook(_LoRAKeys(trunk, wrapped))

    def is_trunk_adapter_param(self, name: str) -> bool:
        return '.lora_' in name

    def reset(self, trunk: nn.Module) -> None:
        # A trunk's random init (no pretrained file) also draws the LoRA matrices: back to
        # peft's init (B = 0, training starts at the trunk).
        for m in trunk.modules():
            if hasattr(m, 'base_layer'):
                m.reset_lora_parameters('default', True)


class _LoRAKeys:
    """Load-time hook of a LoRA-wrapped trunk: ``<m>.weight`` of plain weights -> ``<m>.base_layer.
    weight``; LoRA parameters a file lacks (pretrained weights have none) keep their values."""

    def __init__(self, trunk: nn.Module, wrapped: List[str]):
        self.wrapped = wrapped
        self.lora = {n: p for n, p in trunk.named_parameters() if '.lora_' in n}

    def __call__(self, module, state_dict, prefix, *args):
        for name in self.wrapped:
            for kind in ('weight', 'bias'):
                old = f'{prefix}{name}.{kind}'
                if old in state_dict:
                    state_dict[f'{prefix}{name}.base_layer.{kind}'] = state_dict.pop(old)
        if any(k.startswith(prefix) for k in state_dict):
            for n, p in self.lora.items():
                state_dict.setdefault(prefix + n, p.detach())


@MODELS.register_module()
class VPTDeep(_Adapter):
    """VPT-deep (Jia et al., 2022): ``num_tokens`` learnable prompts per block, inserted after the
    prefix tokens before the block and dropped after it.

    Args:
        num_layers (int), embed_dims (int), patch_size (int): The trunk's (set by PEFTBackbone).
        num_tokens (int): Prompts per block. Default 150 (Rein's table: 3.69M on DINOv2-L).
    """

    def __init__(self, num_layers: int, embed_dims: int, patch_size: int, num_tokens: int = 150,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.num_tokens = num_tokens
        self.prompts = nn.Parameter(torch.empty(num_layers, num_tokens, embed_dims))
        # VPT's uniform range: sqrt(6 / (3 * patch area + D)).
        val = math.sqrt(6.0 / (3 * patch_size * patch_size + embed_dims))
        nn.init.uniform_(self.prompts, -val, val)

    def forward_block(self, i, block, tokens, num_prefix_tokens):
        n = num_prefix_tokens
        prompts = self.prompts[i].to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        out = block(torch.cat([tokens[:, :n], prompts, tokens[:, n:]], dim=1))
        return torch.cat([out[:, :n], out[:, n + self.num_tokens:]], dim=1)


@MODELS.register_module()
class AdaptFormerAdapter(_Adapter):
    """AdaptFormer (Chen et al., 2022): a bottleneck MLP (down, ReLU, up, fixed scale) per block.

    AdaptFormer runs it parallel to the block's MLP; on the trunk interface blocks are opaque, so
    here it runs parallel to the whole block (same input tokens, output added): the same
    parameters, one attention earlier. Up-projection zero-initialised: training starts at the
    frozen trunk.

    Args:
        num_layers (int), embed_dims (int): The trunk's (set by PEFTBackbone).
        bottleneck (int): Hidden width. Default 64 (Rein's table: 3.17M on DINOv2-L).
        scale (float): Output scale. Default 0.1.
    """

    def __init__(self, num_layers: int, embed_dims: int, bottleneck: int = 64, scale: float = 0.1, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.scale = scale
        self.down = nn.ModuleList(nn.Linear(embed_dims, bottleneck) for _ in range(num_layers))
        self.up = nn.ModuleList(nn.Linear(bottleneck, embed_dims) for _ in range(num_layers))
        for down, up in zip(self.down, self.up):
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
            nn.init.zeros_(down.bias)
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)

    def forward_block(self, i, block, tokens, num_prefix_tokens):
        adapted = self.up[i](F.relu(self.down[i](tokens)))
        return block(tokens) + adapted * self.scale


@MODELS.register_module()
class PEFTBackbone(BaseModule):
    """A frozen trunk tuned by a PEFT adapter; returns its patch tokens after ``out_indices``.

    Maps are the un-normed patch tokens (B, D, h, w), as Rein's backbones return, each resized
    by its ``feat_scales`` entry (bilinear). Only the adapter's parameters train.

    Args:
        trunk (dict): Trunk config (trunk interface of ``dinov2.py``).
        adapter (dict | None): ``LoRAAdapter``, ``VPTDeep`` or ``AdaptFormerAdapter`` config
            (``num_layers``/``embed_dims``/``patch_size`` are filled in from the trunk); None:
            no adapter, the frozen trunk alone.
        out_indices (Sequence[int]): Blocks whose outputs are returned, in block order.
        feat_scales (Sequence[float] | None): Resize factor per output. None: no resizing.
    """

    def __init__(self, trunk: dict, adapter: Optional[dict], out_indices: Sequence[int],
                 feat_scales: Optional[Sequence[float]] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.trunk = MODELS.build(trunk)
        if adapter is None:
            self.adapter = _Adapter()  # the frozen trunk
        else:
            # The trunk's sizes, for the adapters that take them (VPT, AdaptFormer).
            adapter = dict(adapter)
            accepted = inspect.signature(MODELS.get(adapter['type'])).parameters
            for key in ('num_layers', 'embed_dims', 'patch_size'):
                value = getattr(self.trunk, key)
                if key in accepted and adapter.setdefault(key, value) != value:
                    raise ValueError(f'PEFTBackbone: adapter {key}={adapter[key]} contradicts '
                                     f'the trunk ({value}); leave it out of the config')
            self.adapter = MODELS.build(adapter)
        self.adapter.attach(self.trunk)
        for name, p in self.trunk.named_parameters():
            p.requires_grad = self.adapter.is_trunk_adapter_param(name)
        self.trunk.eval()
        self.out_indices = sorted(set(out_indices))
        check_indices(self.out_indices, self.trunk.num_layers, 'out_indices')
        if feat_scales is not None and len(feat_scales) != len(self.out_indices):
            raise ValueError(f'feat_scales {list(feat_scales)} must give one factor per output '
                             f'block {self.out_indices}')
        self.feat_scales = None if feat_scales is None else list(feat_scales)

    def init_weights(self):
        super().init_weights()
        self.adapter.reset(self.trunk)

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor):
        # The adapters run between the trunk's blocks: profiled (tools/benchmark.py) as one region.
        with record_function('vitsplit.trunk'):
            return self._forward(x)

    def _forward(self, x: torch.Tensor):
        tokens, grid = self.trunk.tokenize(x)
        n = self.trunk.num_prefix_tokens
        feats = []
        for i, blk in enumerate(self.trunk.blocks[:self.out_indices[-1] + 1]):
            tokens = self.adapter.forward_block(
                i, lambda t, blk=blk: self.trunk.apply_block(blk, t, grid), tokens, n)
            if i in self.out_indices:
                feats.append(patch_map(tokens, n, grid))
        return tuple(rescale(feats, self.feat_scales))
