"""The original ViT-Split learning-rate curve: mmcv 1.x ``poly`` with linear warm-up."""
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS


class PolyParamSchedulerWithWarmup(_ParamScheduler):
    """Poly decay from step ``begin`` with a linear warm-up that scales the decayed value, as
    mmcv 1.x's ``lr_config=dict(policy='poly', warmup='linear', ...)`` computes it.

    At step ``t`` (counted from ``begin``) with ``T = end - begin`` and base value ``v0``::

        regular = (v0 - eta_min) * (1 - t / T) ** power + eta_min
        value   = regular * (1 - (1 - t / warmup_iters) * (1 - warmup_ratio))  if t < warmup_iters
        value   = regular                                                     otherwise

    mmengine's ``LinearLR`` followed by ``PolyLR`` differs: its decay starts after the warm-up
    and runs over ``end - begin - 1`` steps, so for the ViT-Split recipe (40k iterations) its
    value is 3.5 % above this curve from iteration 1500 on. The value is computed from ``v0`` in
    closed form, not chained on the previous one, so resuming reproduces it exactly.

    Args:
        optimizer (Optimizer or OptimWrapper): the optimizer whose groups are scheduled.
        param_name (str): the group entry scheduled, e.g. ``'lr'``.
        power (float): the polynomial's power. Default: 0.9.
        eta_min (float): the value the decay reaches at ``end``. Default: 0.
        warmup_iters (int): steps of linear warm-up, 0 for none. Default: 1500.
        warmup_ratio (float): the warm-up starts at this fraction of the decayed value, in
            (0, 1]. Default: 1e-6.
        begin (int): step at which the schedule starts. Default: 0.
        end (int): step at which the decay reaches ``eta_min`` (mmcv's ``max_iters``); required.
        last_step (int): the last step taken, for resuming without a state dict. Default: -1.
        by_epoch (bool): whether steps are epochs. Default: False (iterations, as the recipe).
        verbose (bool): print each value. Default: False.
    """

    def __init__(self, optimizer, param_name, power=0.9, eta_min=0.0, warmup_iters=1500,
                 warmup_ratio=1e-6, begin=0, end=INF, last_step=-1, by_epoch=False,
                 verbose=False):
        if end >= INF:
            raise ValueError('PolyParamSchedulerWithWarmup needs end: the step at which the '
                             'decay reaches eta_min (the number of training iterations).')
        if warmup_iters < 0 or not 0 < warmup_ratio <= 1:
            raise ValueError(f'warmup_iters must be >= 0 and warmup_ratio in (0, 1], got '
                             f'{warmup_iters} and {warmup_ratio}')
        self.power = power
        self.eta_min = eta_min
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.total_iters = end - begin
        super().__init__(optimizer, param_name, begin=begin, end=end, last_step=last_step,
                         by_epoch=by_epoch, verbose=verbose)

    def _get_value(self):
        t = self.last_step
        coeff = (1 - t / self.total_iters)**self.power
        values = [(base - self.eta_min) * coeff + self.eta_min for base in self.base_values]
        if t < self.warmup_iters:
            scale = 1 - (1 - t / self.warmup_iters) * (1 - self.warmup_ratio)
            values = [value * scale for value in values]
        return values


@PARAM_SCHEDULERS.register_module()
class PolyLRWithWarmup(LRSchedulerMixin, PolyParamSchedulerWithWarmup):
    """:class:`PolyParamSchedulerWithWarmup` on the learning rate: the ViT-Split recipe's
    ``dict(type='PolyLRWithWarmup', power=0.9, warmup_iters=1500, warmup_ratio=1e-6, end=N)``.
    """
