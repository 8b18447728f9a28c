"""bf16 mixed precision for training, on GPU and CPU alike."""
from contextlib import contextmanager

import torch
from mmengine.device import get_device
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward passes run under bf16 autocast.

    mmengine's ``AmpOptimWrapper`` needs CUDA and defaults to fp16 with loss scaling; bf16 has
    fp32's exponent range, so it needs no scaling and runs on the CPU too. Weights, gradients and
    optimizer state stay fp32. Arguments are :class:`mmengine.optim.OptimWrapper`'s.
    """

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast(get_device(), dtype=torch.bfloat16):
            yield
