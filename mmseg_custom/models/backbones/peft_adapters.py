"""The PEFT baselines of Rein's table on any trunk: LoRA (through ``peft``), VPT-deep, AdaptFormer.

``PEFTBackbone`` freezes the trunk and trains only its ``adapter``; the adapter is chosen in the
config (``adapter=dict(type='LoRAAdapter' | 'VPTDeep' | 'AdaptFormerAdapter', ...)``) and works on
the trunk interface of ``dinov2.py``: it may change modules of the trunk when built (LoRA) and
wraps each ``apply_block`` call (VPT, AdaptFormer). Defaults give Rein's counts on DINOv2-L
(LoRA 0.79M, AdaptFormer 3.17M, VPT 3.69M).
"""
import contextlib
import math
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from .adapter_base import AdapterBackbone

# block(tokens, num_extra=0): one trunk block; ``num_extra`` tokens after the prefix have no position.
BlockFn = Callable[..., torch.Tensor]


class _Adapter(BaseModule):
    """Base: ``attach(trunk, refuse)`` once when built, ``forward_block`` around every block."""

    def attach(self, trunk: nn.Module, refuse: Callable[[str, str], None]) -> None:
        """Change the trunk where the adapter lives inside it; ``refuse(reason, fix)`` raises the
        build-time refusal of this adapter on this trunk."""

    def loading_pretrained(self):
        """Context of the trunk's own pretrained load (files without the adapter's weights)."""
        return contextlib.nullcontext()

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

    After injection, one forward pass of the trunk on a 2 x 2 patch image checks that every
    wrapped layer is called through its module (a trunk that reads ``layer.weight`` directly would
    bypass peft and train nothing); a layer that is not called refuses the combination.

    Args:
        r (int): Rank. Default 8 (Rein's table: 0.79M on DINOv2-L with ``qkv``).
        lora_alpha (int): Scaling numerator (scale = lora_alpha / r). Default 8.
        target_modules (Sequence[str] | None): Names (suffixes) of the trunk's linear layers to
            adapt. Default None: the attention's input projections, ``qkv`` where the trunk fuses
            them (DINOv2, most timm ViTs), else ``q_proj``, ``k_proj``, ``v_proj`` (EVA02).
        lora_dropout (float): Default 0.
    """

    def __init__(self, r: int = 8, lora_alpha: int = 8,
                 target_modules: Optional[Sequence[str]] = None, lora_dropout: float = 0.0,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.target_modules = None if target_modules is None else list(target_modules)
        self.lora_kwargs = dict(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                bias='none')
        self._hooks: List['_LoRAKeys'] = []

    @staticmethod
    def _default_targets(trunk: nn.Module) -> List[str]:
        names = {n.rsplit('.', 1)[-1] for n, m in trunk.named_modules()
                 if isinstance(m, nn.Linear)}
        return ['qkv'] if 'qkv' in names else [n for n in ('q_proj', 'k_proj', 'v_proj')
                                               if n in names]

    def attach(self, trunk, refuse):
        from peft import LoraConfig, inject_adapter_in_model
        targets = self.target_modules or self._default_targets(trunk)
        if not targets:
            refuse('the trunk has no fused qkv and no q/k/v projection layers',
                   'Name its attention input layers in the adapter\'s target_modules.')
        try:
            inject_adapter_in_model(LoraConfig(target_modules=targets, **self.lora_kwargs), trunk)
        except ValueError as err:  # peft: no module matches
            refuse(f'no layer matches target_modules {targets} ({err})',
                   'Set target_modules to names of its linear layers.')
        wrapped = {n: m for n, m in trunk.named_modules() if hasattr(m, 'base_layer')}
        bypassed = _not_called(trunk, wrapped)
        if bypassed:
            refuse(f'its forward pass bypasses the LoRA-wrapped layers {bypassed[:4]} (it reads '
                   'their weights directly), so LoRA would train nothing',
                   'Target other layers (target_modules) or make the trunk call them.')
        # peft wraps each target as <name>.base_layer: pretrained files keep <name>.weight.
        self._hooks = [_LoRAKeys(m) for m in wrapped.values()]
        for hook, m in zip(self._hooks, wrapped.values()):
            m.register_load_state_dict_pre_hook(hook)

    @contextlib.contextmanager
    def loading_pretrained(self):
        for hook in self._hooks:
            hook.fill = True
        try:
            yield
        finally:
            for hook in self._hooks:
                hook.fill = False

    def is_trunk_adapter_param(self, name: str) -> bool:
        return '.lora_' in name

    def reset(self, trunk: nn.Module) -> None:
        # A trunk's random init (no pretrained file) also draws the LoRA matrices: back to
        # peft's init (B = 0, training starts at the trunk).
        for m in trunk.modules():
            if hasattr(m, 'base_layer'):
                m.reset_lora_parameters('default', True)


def _not_called(trunk: nn.Module, layers: dict) -> List[str]:
    """Names of ``layers`` whose forward does not run in one pass of the trunk."""
    param = next(trunk.parameters())
    if param.device.type == 'meta':  # built only to count parameters
        return []
    called = set()
    handles = [m.register_forward_hook(lambda *_, name=n: called.add(name))
               for n, m in layers.items()]
    side = 2 * trunk.patch_size
    was_training = trunk.training
    try:
        trunk.eval()
        with torch.no_grad():
            trunk(param.new_zeros(1, 3, side, side), [trunk.num_layers - 1])
    finally:
        trunk.train(was_training)
        for h in handles:
            h.remove()
    return [n for n in layers if n not in called]


class _LoRAKeys:
    """Load-time hook of one LoRA-wrapped layer: its plain ``weight``/``bias`` (pretrained files)
    go to ``base_layer``. While the trunk loads its pretrained file (``fill``), the LoRA
    parameters the file lacks keep their values; any other load must bring them (a checkpoint
    without them is not a LoRA model's)."""

    def __init__(self, layer: nn.Module):
        self.lora = {n: p for n, p in layer.named_parameters() if n.startswith('lora_')}
        self.fill = False

    def __call__(self, module, state_dict, prefix, *args):
        for kind in ('weight', 'bias'):
            if prefix + kind in state_dict:
                state_dict[f'{prefix}base_layer.{kind}'] = state_dict.pop(prefix + kind)
        if self.fill:
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
        # Prompts have no position: a RoPE trunk leaves them unrotated (num_extra).
        out = block(torch.cat([tokens[:, :n], prompts, tokens[:, n:]], dim=1),
                    num_extra=self.num_tokens)
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
class PEFTBackbone(AdapterBackbone):
    """A frozen trunk tuned by a PEFT adapter; returns its patch tokens after ``out_indices``.

    Maps are the un-normed patch tokens (B, D, h, w), as Rein's backbones return, each resized
    by its ``feat_scales`` entry (bilinear). Only the adapter's parameters train.

    Args:
        trunk (dict): Trunk config (trunk interface of ``trunk.py``).
        adapter (dict | None): ``LoRAAdapter``, ``VPTDeep`` or ``AdaptFormerAdapter`` config
            (``num_layers``/``embed_dims``/``patch_size`` are filled in from the trunk); None:
            no adapter, the frozen trunk alone.
        out_indices (Sequence[int]): Blocks whose outputs are returned, in this order.
        feat_scales (Sequence[float] | None): Resize factor per output, paired with
            ``out_indices`` by position. None: no resizing.
    """

    def __init__(self, trunk: dict, adapter: Optional[dict], out_indices: Sequence[int],
                 feat_scales: Optional[Sequence[float]] = None, init_cfg: Optional[dict] = None):
        super().__init__(trunk, out_indices, feat_scales, init_cfg)
        if adapter is None:
            self.adapter = _Adapter()  # the frozen trunk
        else:
            self.adapter = MODELS.build(self.trunk_sizes(adapter))
        self.method = type(self.adapter).__name__ if adapter is not None else 'frozen trunk'
        self.adapter.attach(self.trunk, self.refuse)
        self.freeze_all_but_method()

    def is_method_param(self, name: str) -> bool:
        if name.startswith('adapter.'):
            return True
        return name.startswith('trunk.') and self.adapter.is_trunk_adapter_param(name[6:])

    def init_weights(self):
        with self.adapter.loading_pretrained():
            super().init_weights()
        self.adapter.reset(self.trunk)

    def load_trunk_pretrained(self):
        with self.adapter.loading_pretrained():
            self.trunk.init_weights()

    def run_block(self, i, block, tokens, grid):
        return self.adapter.forward_block(
            i, lambda t, num_extra=0: self.trunk.apply_block(block, t, grid, num_extra), tokens,
            self.trunk.num_prefix_tokens)
