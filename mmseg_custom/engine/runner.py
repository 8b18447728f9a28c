"""An mmengine ``Runner`` that runs one config on many GPUs, one GPU or CPU; safe checkpoints."""
import datetime
import re
from collections import OrderedDict

import torch
import torch.distributed as torch_dist
from mmengine.device import get_device
from mmengine.dist import is_distributed
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner, load_state_dict
from mmseg.registry import RUNNERS
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import (ATOMIC_BACKEND, latest_checkpoint, load_from_local,
                         load_state_dict_exactly)
from .checkpoint_hook import SafeCheckpointHook
from .sync_bn import revert_sync_bn_if_unsupported

# Checkpoint paths with a scheme (http://, s3://, open-mmlab://...) go to mmengine's loaders.
_REMOTE = re.compile(r'^[A-Za-z][\w+.-]*://')


@RUNNERS.register_module()
class PortableRunner(Runner):
    """``Runner`` that adapts a GPU config to the machine it runs on, saving checkpoints atomically.

    Differences from :class:`mmengine.runner.Runner`, each where mmengine would fail or mislead:

    * Without CUDA, distributed runs (``--launcher pytorch``) use the gloo backend and CPU DDP.
    * SyncBN layers become BN layers, with one log line, where SyncBN cannot run (no GPU, or one
      process); see :func:`revert_sync_bn_if_unsupported`.
    * Local checkpoints are written atomically (``AtomicLocalBackend``), and ``CheckpointHook``
      becomes :class:`SafeCheckpointHook`, which deletes outdated checkpoints only after the new
      one is complete.
    * Resuming (``resume='auto'`` or ``True`` without ``load_from``) starts from the newest
      complete checkpoint of the work dir, even where ``last_checkpoint`` is stale, or, when there
      is none, says so in one line and starts fresh; see :meth:`load_or_resume`.
    * Local checkpoints are read by :func:`load_from_local` (weights_only, CRC-checked, clear
      errors). Resuming, ``test()`` and ``val()`` refuse a checkpoint that does not fit the model
      (:func:`load_state_dict_exactly`), before any data is read; ``load_from`` for fine-tuning
      loads what fits and warns, as mmengine does.

    Arguments are those of :class:`mmengine.runner.Runner`.
    """

    def setup_env(self, env_cfg):
        """Set up the environment; without CUDA, start the process group on gloo ourselves.

        mmengine's ``init_dist`` calls ``torch.cuda.set_device`` first, which raises without a GPU.
        """
        if self.distributed and not torch.cuda.is_available() and not is_distributed():
            if self.launcher != 'pytorch':
                raise RuntimeError(
                    f'Distributed training without a GPU needs --launcher pytorch (dist_train.sh), '
                    f'got --launcher {self.launcher}.')
            timeout = env_cfg.get('dist_cfg', {}).get('timeout')
            kwargs = {} if timeout is None else dict(timeout=datetime.timedelta(seconds=timeout))
            torch_dist.init_process_group(backend='gloo', **kwargs)
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg, model):
        """Revert SyncBN where it cannot run, then wrap as mmengine does (CPU DDP without a GPU)."""
        if is_model_wrapper(model):
            return super().wrap_model(model_wrapper_cfg, model)
        model = revert_sync_bn_if_unsupported(model, self.world_size, logger=self.logger)
        if not self.distributed:
            # mmengine's own single-process path only adds a generic SyncBN log line to this.
            return model.to(get_device())
        if not torch.cuda.is_available():
            self.logger.info(f'No GPU: {self.world_size} processes train on CPU over gloo.')
            model_wrapper_cfg = self._cpu_ddp_cfg(model_wrapper_cfg)
        return super().wrap_model(model_wrapper_cfg, model)

    def _cpu_ddp_cfg(self, model_wrapper_cfg):
        """Wrapper config for DDP on CPU: mmengine passes ``device_ids=[LOCAL_RANK]``, which DDP
        accepts only for GPU modules; with ``device_ids=None`` it accepts a CPU module."""
        if model_wrapper_cfg is None:
            model_wrapper_cfg = dict(
                type='MMDistributedDataParallel', broadcast_buffers=False,
                find_unused_parameters=self.cfg.get('find_unused_parameters', False))
        model_wrapper_cfg = dict(model_wrapper_cfg)
        wrapper = MODEL_WRAPPERS.get(model_wrapper_cfg.get('type', 'MMDistributedDataParallel'))
        if wrapper is not None and issubclass(wrapper, DistributedDataParallel):
            model_wrapper_cfg.setdefault('device_ids', None)
        return model_wrapper_cfg

    _exact_load = False  # load_checkpoint: refuse a checkpoint that does not fit the model

    def register_default_hooks(self, hooks=None):
        """Register mmengine's default hooks, with ``SafeCheckpointHook`` for ``CheckpointHook``."""
        hooks = dict(hooks or {})
        checkpoint = hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
        if isinstance(checkpoint, dict) and checkpoint.get('type') in (
                'CheckpointHook', 'mmengine.CheckpointHook', CheckpointHook):
            hooks['checkpoint'] = dict(checkpoint, type=SafeCheckpointHook)
        super().register_default_hooks(hooks)

    def load_or_resume(self):
        """Load or resume; resuming without a path starts from the work dir's newest checkpoint.

        ``resume='auto'`` (``--resume`` without a path) resumes from the newest complete
        checkpoint of the work dir (:func:`latest_checkpoint`: the one ``last_checkpoint`` names,
        or a newer complete one beside it); when there is none it says so in one line and starts
        fresh, from ``load_from`` if that is set. ``resume=True`` keeps mmengine's meaning: resume
        from ``load_from``, else from the newest checkpoint (where mmengine would log "Auto
        resumed from the latest checkpoint None." and pass an empty ``last_checkpoint`` on as a
        file name).
        """
        if self._has_loaded:
            return
        if self._resume == 'auto' or (self._resume and self._load_from is None):
            latest, note = latest_checkpoint(self.work_dir)
            if latest is not None:
                self.logger.info(f'Resuming from {latest} ({note}).')
                self._resume, self._load_from = True, latest
            else:
                start = f'the weights of {self._load_from}' if self._load_from else 'scratch'
                self.logger.info(f'Resume: {note}; training from {start}.')
                self._resume = False
        super().load_or_resume()

    def resume(self, filename, *args, **kwargs):
        """Resume as mmengine does, but only from a checkpoint that fits the model exactly.

        mmengine loads what fits, then restores optimizer states whose shapes no longer match
        the parameters (a crash at the first step, after the data loader was advanced).
        """
        self._exact_load = True
        try:
            return super().resume(filename, *args, **kwargs)
        finally:
            self._exact_load = False

    def val(self):
        self._exact_load = True  # metrics of a partly random model would mislead
        return super().val()

    def test(self):
        self._exact_load = True
        return super().test()

    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):  # noqa: B006 (mmengine's signature)
        """mmengine's ``load_checkpoint``; local files through :func:`load_from_local` and, when
        resuming, testing or validating, into the model only if they fit it exactly."""
        if _REMOTE.match(str(filename)):
            return super().load_checkpoint(filename, map_location, strict, revise_keys)
        checkpoint = load_from_local(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        if self._exact_load or strict:
            load_state_dict_exactly(model, checkpoint, filename)
        else:
            load_state_dict(model, _revise_keys(checkpoint, revise_keys), strict=False,
                            logger=self.logger)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def save_checkpoint(self, out_dir, filename, file_client_args=None, save_optimizer=True,
                        save_param_scheduler=True, meta=None, by_epoch=True, backend_args=None):
        """Save a checkpoint as mmengine does; to a local folder, atomically."""
        if (file_client_args is None and backend_args is None
                and isinstance(get_file_backend(out_dir), LocalBackend)):
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().save_checkpoint(out_dir, filename, file_client_args, save_optimizer,
                                save_param_scheduler, meta, by_epoch, backend_args)


def _revise_keys(checkpoint, revise_keys):
    """The checkpoint's state dict with each ``(pattern, replacement)`` applied to its keys, in
    order, as mmengine's ``load_checkpoint`` does (its helper for this is private)."""
    state_dict = checkpoint.get('state_dict', checkpoint)
    metadata = getattr(state_dict, '_metadata', OrderedDict())
    state_dict = OrderedDict(state_dict)  # a copy that can carry the metadata
    for pattern, replacement in revise_keys:
        state_dict = OrderedDict((re.sub(pattern, replacement, k), v)
                                 for k, v in state_dict.items())
    state_dict._metadata = metadata  # per-module versions, read by the modules' load hooks
    return state_dict


def close_process_group():
    """Shut the default process group down, if any, once a launcher's work is done.

    Left to interpreter exit, gloo's threads can outlive the objects they use; a rank was reported
    to abort then ("terminate called without an active exception") after finishing its work.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
