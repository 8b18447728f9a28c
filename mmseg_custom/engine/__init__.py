"""Training machinery: a portable Runner, SyncBN fallback and safe checkpoints.

Importing it registers ``PortableRunner`` in mmseg's ``RUNNERS``, the ``'atomic_local'`` file
backend, mmengine's loader for local checkpoint paths and the ``weights_only`` allow-list for
mmengine checkpoints (see :mod:`.checkpoint`).
"""
from .autocast import BF16OptimWrapper
from .checkpoint import (AtomicLocalBackend, CheckpointError, allow_mmengine_checkpoint_globals,
                         load_from_local)
from .label_check import SegLabelCheckHook, check_label_values
from .lr_scheduler import PolyLRWithWarmup
from .optim_constructor import FrozenAwareOptimWrapperConstructor
from .runner import PortableRunner
from .sync_bn import revert_sync_bn_if_unsupported, sync_bn_can_run

__all__ = [
    'AtomicLocalBackend', 'BF16OptimWrapper', 'CheckpointError',
    'FrozenAwareOptimWrapperConstructor', 'PortableRunner', 'allow_mmengine_checkpoint_globals',
    'load_from_local', 'revert_sync_bn_if_unsupported', 'sync_bn_can_run', 'PolyLRWithWarmup',
    'SegLabelCheckHook', 'check_label_values'
]
