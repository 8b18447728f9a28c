"""The official mask annealing: per query block, the probability that a query keeps its
attention mask decays from 1 to 0 over a window of iterations (``attn_mask_probs``)."""
from typing import Sequence

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from .head import mask_annealing


@HOOKS.register_module()
class EoMTMaskAnnealingHook(Hook):
    """Set the EoMT head's ``attn_mask_probs`` after each training iteration, as the official
    ``on_train_batch_end``: after iteration ``i`` (0-based) block ``k`` gets
    ``mask_annealing(start_iters[k], end_iters[k], i + 1, power)`` (Lightning's
    ``global_step`` counts the finished steps). The values are buffers of the model, so they are
    saved and resumed with it.

    Args:
        start_iters (Sequence[int]): Per query block, where its decay starts.
        end_iters (Sequence[int]): Per query block, from where its masks are off.
        power (float): Polynomial power (the official ``poly_power``). Default 0.9.
    """

    priority = 'NORMAL'

    def __init__(self, start_iters: Sequence[int], end_iters: Sequence[int], power: float = 0.9):
        if len(start_iters) != len(end_iters):
            raise ValueError('EoMTMaskAnnealingHook: start_iters and end_iters differ in length')
        self.start_iters, self.end_iters, self.power = list(start_iters), list(end_iters), power

    def before_train(self, runner) -> None:
        # A window that the training stops inside leaves its block's masks on with a probability
        # strictly between 0 and 1: inference would then sample random masks (a different
        # prediction at each run). Windows wholly after the end (masks always on: a short smoke
        # run) and wholly before it are fine.
        end = runner.max_iters
        cut = [(s, e) for s, e in zip(self.start_iters, self.end_iters) if s < end < e]
        if cut:
            raise ValueError(
                f'EoMTMaskAnnealingHook: training stops at iteration {end}, inside the annealing '
                f'window(s) {cut} (start_iters={self.start_iters}, end_iters={self.end_iters}): '
                'the model would keep random masked attention. Set the windows to end by '
                'train_cfg.max_iters (custom_hooks), or shorten the schedule with a tool that '
                'scales them: tools/demo.py --iters, tools/compare.py --iters.')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        model = getattr(runner.model, 'module', runner.model)
        probs = model.decode_head.attn_mask_probs
        if len(probs) != len(self.start_iters):
            raise ValueError(f'EoMTMaskAnnealingHook: {len(self.start_iters)} windows for '
                             f'{len(probs)} query blocks')
        step = runner.iter + 1
        for k, (start, end) in enumerate(zip(self.start_iters, self.end_iters)):
            probs[k] = mask_annealing(start, end, step, self.power)
