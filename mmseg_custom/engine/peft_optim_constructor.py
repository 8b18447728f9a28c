"""Rein's optimizer constructor for parameter-efficient fine-tuning."""
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

from .optim_constructor import FrozenAwareOptimWrapperConstructor


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PEFTOptimWrapperConstructor(FrozenAwareOptimWrapperConstructor):
    """Rein's ``PEFTOptimWrapperConstructor`` (official ``rein/optimizers``), under its name so
    that configs written for the official code build: mmengine's ``paramwise_cfg`` rules with
    frozen parameters left out of the optimizer, which
    :class:`FrozenAwareOptimWrapperConstructor` does (and merges equal groups: same updates).

    Unlike the official one it does not call ``model.train()`` first: the official backbones
    freeze their trunk in ``train()``, ours when they are built, and building an optimizer should
    not switch a model out of eval mode.
    """
