"""An optimizer constructor that leaves frozen modules out quietly."""
from typing import List

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FrozenAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, except that a module whose parameters are all frozen (the
    ViT-Split trunk) is left out with one log line, instead of one warning per parameter."""

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        if prefix and not any(p.requires_grad for p in module.parameters()):
            n = sum(p.numel() for p in module.parameters())
            if n:
                print_log(f'{prefix}: {n:,} frozen parameters, not optimized', logger='current')
            return
        super().add_params(params, module, prefix, is_dcn_module)
