"""SyncBN where it can run, BN elsewhere: one config for 8 GPUs, 1 GPU and CPU."""
import sys

import torch
from mmengine.logging import print_log
from mmengine.model import revert_sync_batchnorm
from torch import nn


def sync_bn_types():
    """torch's SyncBN, and mmcv's where mmcv.ops is loaded (a model holding one has loaded it;
    importing mmcv.ops just to look would load its compiled ops into every process)."""
    mmcv_ops = sys.modules.get('mmcv.ops')
    return (nn.SyncBatchNorm, ) + ((mmcv_ops.SyncBatchNorm, ) if mmcv_ops is not None else ())


def sync_bn_can_run(world_size):
    """Whether SyncBN can synchronise: it needs GPUs and more than one process.

    Args:
        world_size (int): number of training processes.
    """
    return world_size > 1 and torch.cuda.is_available()


def revert_sync_bn_if_unsupported(model, world_size, logger='current'):
    """Replace SyncBN layers by BN layers, keeping weights and statistics, where SyncBN cannot run.

    Built models are converted rather than configs, so SyncBN is found wherever it was built:
    ``norm_cfg=dict(type='SyncBN')`` in a backbone or head, or ``nn.SyncBatchNorm`` in code.
    One line is logged when layers are replaced.

    Args:
        model (nn.Module): the built model (not wrapped in DDP).
        world_size (int): number of training processes.
        logger (str | logging.Logger): where the line goes. Default: the current mmengine logger.

    Returns:
        nn.Module: ``model`` with BN (``_BatchNormXd``) layers in place of SyncBN layers where
        needed; the same parameter and buffer tensors are reused.
    """
    if sync_bn_can_run(world_size):
        return model
    types = sync_bn_types()
    count = sum(isinstance(m, types) for m in model.modules())
    if count == 0:
        return model
    where = 'no GPU' if not torch.cuda.is_available() else 'a single process'
    print_log(f'Replaced {count} SyncBN layers by BN: SyncBN needs several GPU processes, '
              f'this run has {where}.', logger=logger)
    return revert_sync_batchnorm(model)
