"""Training machinery: a portable Runner, SyncBN fallback and safe checkpoints.

Importing it registers ``PortableRunner`` in mmseg's ``RUNNERS``, ``SafeCheckpointHook`` in its
``HOOKS``, the ``'atomic_local'`` file backend and the ``weights_only`` allow-list for mmengine
checkpoints (see :mod:`.checkpoint`). It replaces none of mmengine's loaders: the safe loader
serves this package's own load paths.
"""
from .autocast import BF16OptimWrapper
from .checkpoint import (AtomicLocalBackend, CheckpointError, allow_mmengine_checkpoint_globals,
                         latest_checkpoint, load_checkpoint_exactly, load_from_local,
                         load_state_dict_exactly, remove_unfinished_writes)
from .checkpoint_hook import SafeCheckpointHook
from .label_check import SegLabelCheckHook, check_label_values
from .lr_scheduler import PolyLRWithWarmup
from .optim_constructor import FrozenAwareOptimWrapperConstructor
from .peft_optim_constructor import PEFTOptimWrapperConstructor
from .runner import PortableRunner, close_process_group
from .sync_bn import revert_sync_bn_if_unsupported, sync_bn_can_run

__all__ = [
    'AtomicLocalBackend', 'BF16OptimWrapper', 'CheckpointError',
    'FrozenAwareOptimWrapperConstructor', 'PEFTOptimWrapperConstructor', 'PolyLRWithWarmup',
    'PortableRunner', 'SafeCheckpointHook', 'SegLabelCheckHook', 'allow_mmengine_checkpoint_globals',
    'check_label_values', 'close_process_group', 'latest_checkpoint', 'load_checkpoint_exactly',
    'load_from_local', 'load_state_dict_exactly', 'remove_unfinished_writes',
    'revert_sync_bn_if_unsupported', 'sync_bn_can_run'
]
