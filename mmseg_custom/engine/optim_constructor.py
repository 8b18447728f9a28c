"""An optimizer constructor that leaves frozen modules out quietly and merges equal param groups."""
from typing import List

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn


def merge_param_groups(params: List[dict]) -> List[dict]:
    """One group per distinct set of options, parameters in their original order.

    mmengine's ``paramwise_cfg`` makes one group per parameter; a fused or foreach optimizer then
    launches one kernel per tensor instead of one per group. The update is the same: AdamW and
    SGD treat each parameter on its own, and LR schedulers scale every group alike.
    """
    merged = {}
    for group in params:
        key = tuple(sorted((k, repr(v)) for k, v in group.items() if k != 'params'))
        if key in merged:
            merged[key]['params'].extend(group['params'])
        else:
            merged[key] = dict(group, params=list(group['params']))
    return list(merged.values())


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FrozenAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, except that a module whose parameters are all frozen (the
    ViT-Split trunk) is left out with one log line, instead of one warning per parameter, and that
    parameters with identical options share one param group (:func:`merge_param_groups`)."""

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        if prefix and not any(p.requires_grad for p in module.parameters()):
            n = sum(p.numel() for p in module.parameters())
            if n:
                print_log(f'{prefix}: {n:,} frozen parameters, not optimized', logger='current')
            return
        super().add_params(params, module, prefix, is_dcn_module)
        if not prefix:  # the top-level call, after all children have added theirs
            params[:] = merge_param_groups(params)
