"""An optimizer constructor that leaves frozen modules out quietly and merges equal param groups."""
import logging
from collections import OrderedDict
from typing import List

from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

from ..utils.params import group_of


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


class _DropPerParameterLines(logging.Filter):
    """Drops mmengine's lines about single parameters: ``paramwise_options -- NAME:KEY=VALUE`` per
    option of each trainable one and ``NAME is skipped since its requires_grad=False`` per frozen
    one; the constructor sums them up instead."""

    def filter(self, record):
        msg = str(record.msg)
        return not (msg.startswith('paramwise_options -- ')
                    or msg.endswith(' is skipped since its requires_grad=False'))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FrozenAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, except that

    * a module whose parameters are all frozen (the ViT-Split trunk) is left out, and so is any
      other frozen parameter (a LoRA-wrapped layer's own weight);
    * parameters with identical options share one param group (:func:`merge_param_groups`);
    * the log says it in a few lines: the frozen parameters per part of the model
      (``backbone.trunk``) and each param group's lr, weight decay and size, instead of a line
      per frozen module or per option of each parameter (hundreds for a LoRA-wrapped DINOv2-L or
      a Mask2Former head).
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        if prefix and not any(p.requires_grad for p in module.parameters()):
            return  # counted with the others in the summary of the top-level call
        if prefix:
            super().add_params(params, module, prefix, is_dcn_module)
            return
        logger = MMLogger.get_current_instance()
        quiet = _DropPerParameterLines()
        logger.addFilter(quiet)
        try:
            super().add_params(params, module, prefix, is_dcn_module)
        finally:
            logger.removeFilter(quiet)
        # mmengine < 0.10 added frozen parameters as groups of their own.
        params[:] = merge_param_groups(
            [g for g in params if any(p.requires_grad for p in g['params'])])
        self._log_summary(params, module)

    def _log_summary(self, params: List[dict], model: nn.Module) -> None:
        names = {id(p): n for n, p in model.named_parameters()}
        optimized = {id(p) for g in params for p in g['params']}
        frozen = OrderedDict()
        for name, p in model.named_parameters():
            if id(p) not in optimized:
                frozen[group_of(name)] = frozen.get(group_of(name), 0) + p.numel()
        for part, n in frozen.items():
            print_log(f'{part}: {n:,} frozen parameters, not optimized', logger='current')
        for i, group in enumerate(params):
            trainable = group['params']
            options = dict(lr=self.base_lr, weight_decay=self.base_wd)
            options.update((k, v) for k, v in group.items()
                           if k not in ('params', 'lr_mult', 'decay_mult'))
            shown = ', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}'
                              for k, v in options.items() if v is not None)
            examples = ', '.join(names[id(p)] for p in trainable[:2])
            more = f', ... ({len(trainable) - 2} more)' if len(trainable) > 2 else ''
            print_log(f'param group {i}: {shown}: {len(trainable)} tensors, '
                      f'{sum(p.numel() for p in trainable):,} parameters ({examples}{more})',
                      logger='current')
