"""The official EoMT optimisation recipe: layer-wise lr decay over the trunk blocks and a two-stage
warm-up (the new parts first, then the encoder), both as the official ``configure_optimizers`` and
``TwoStageWarmupPolySchedule`` compute them."""
import re
from typing import List, Optional, Sequence

from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS, PARAM_SCHEDULERS

TRUNK = 'backbone.trunk.'


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class EoMTOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """One parameter group per trainable parameter; trunk parameters are marked ``encoder``.

    ``paramwise_cfg=dict(layer_decay=0.8)``: trunk block ``i`` of ``L`` trains at
    ``lr * layer_decay ** (L - 1 - i)``, the trunk's embeddings (patch, position, prefix tokens) as
    block 0, its final norm and everything outside the trunk at ``lr``. Weight decay applies to
    all (as the official AdamW). Frozen parameters are left out.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        # Never empty: mmengine skips add_params (and so the groups) without paramwise options.
        super().__init__(optim_wrapper_cfg, dict(dict(layer_decay=1.0), **(paramwise_cfg or {})))

    def add_params(self, params: List[dict], module, prefix: str = '', **kwargs) -> None:
        decay = self.paramwise_cfg.get('layer_decay', 1.0)
        depth = module.backbone.trunk.num_layers
        for name, param in module.named_parameters(prefix=prefix.rstrip('.')):
            if not param.requires_grad:
                continue
            group = dict(params=[param], lr=self.base_lr, name=name)
            if self.base_wd is not None:
                group['weight_decay'] = self.base_wd
            if name.startswith(TRUNK):
                group['encoder'] = True
                block = re.search(r'(?:^|\.)blocks\.(\d+)\.', name)
                rel = re.sub(r'^(model\.)?', '', name[len(TRUNK):])
                if block:
                    group['lr'] = self.base_lr * decay ** (depth - 1 - int(block.group(1)))
                elif not rel.startswith(('norm.', 'fc_norm.')):
                    group['lr'] = self.base_lr * decay ** (depth - 1)
            params.append(group)


@PARAM_SCHEDULERS.register_module()
class TwoStageWarmupPolyLR(LRSchedulerMixin, _ParamScheduler):
    """The official ``TwoStageWarmupPolySchedule``: groups outside the encoder warm up linearly
    from 0 over ``warmup_iters[0]`` steps, then decay ``(1 - t / T) ** power``; encoder groups
    (``group['encoder']``, see :class:`EoMTOptimWrapperConstructor`) stay at 0 for
    ``warmup_iters[0]`` steps, warm up over ``warmup_iters[1]``, then decay.

    Args:
        warmup_iters (Sequence[int]): (non-encoder, encoder) warm-up lengths. Default (500, 1000).
        power (float): Poly power. Default 0.9.
        begin, end, last_step, by_epoch, verbose: As mmengine's schedulers; the schedule's total
            is ``end - begin``.
    """

    def __init__(self, optimizer, warmup_iters: Sequence[int] = (500, 1000), power: float = 0.9,
                 begin: int = 0, end: int = INF, last_step: int = -1, by_epoch: bool = False,
                 verbose: bool = False):
        self.warmup_iters = tuple(warmup_iters)
        self.power = power
        self.total_iters = end - begin
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step,
                         by_epoch=by_epoch, verbose=verbose)

    def _poly(self, base: float, step: int, start: int) -> float:
        t = max(0, step - start) / max(1, self.total_iters - start)
        return base * max(0.0, 1.0 - t) ** self.power

    def _get_value(self) -> List[float]:
        step = self.last_step
        first, second = self.warmup_iters
        values = []
        for group, base in zip(self.optimizer.param_groups, self.base_values):
            if not group.get('encoder', False):
                value = (base * step / first if first > 0 and step < first
                         else self._poly(base, step, first))
            elif step < first:
                value = 0.0
            elif step < first + second:
                value = base * (step - first) / second
            else:
                value = self._poly(base, step, first + second)
            values.append(value)
        return values
