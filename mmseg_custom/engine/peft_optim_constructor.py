"""Rein's optimizer constructor for parameter-efficient fine-tuning."""
from typing import List

from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

from .optim_constructor import FrozenAwareOptimWrapperConstructor


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PEFTOptimWrapperConstructor(FrozenAwareOptimWrapperConstructor):
    """Rein's ``PEFTOptimWrapperConstructor`` (official ``rein/optimizers``): mmengine's
    ``paramwise_cfg`` rules, but the model is put in train mode first (the official backbones
    freeze their trunk in ``train()``) and frozen parameters are left out of the optimizer
    altogether, also inside modules that train in part (a LoRA-wrapped Linear), where mmengine
    would add them as groups of their own. Equal groups are merged as in
    :class:`FrozenAwareOptimWrapperConstructor` (same updates)."""

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        start = len(params)
        super().add_params(params, module, prefix, is_dcn_module)
        params[start:] = [g for g in params[start:]
                          if any(p.requires_grad for p in g['params'])]

    def __call__(self, model: nn.Module):
        model.train()
        return super().__call__(model)
