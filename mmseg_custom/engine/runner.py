"""An mmengine ``Runner`` that runs one config on many GPUs, one GPU or CPU; safe checkpoints."""
import datetime
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.device import get_device
from mmengine.dist import is_distributed
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.model import is_model_wrapper
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner
from mmseg.registry import RUNNERS
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import ATOMIC_BACKEND, CheckpointError
from .sync_bn import revert_sync_bn_if_unsupported


@RUNNERS.register_module()
class PortableRunner(Runner):
    """``Runner`` that adapts a GPU config to the machine it runs on, saving checkpoints atomically.

    Differences from :class:`mmengine.runner.Runner`, each where mmengine would fail or mislead:

    * Without CUDA, distributed runs (``--launcher pytorch``) use the gloo backend and CPU DDP.
    * SyncBN layers become BN layers, with one log line, where SyncBN cannot run (no GPU, or one
      process); see :func:`revert_sync_bn_if_unsupported`.
    * Local checkpoints are written atomically (``AtomicLocalBackend``).
    * ``resume='auto'`` resumes from the work dir's latest checkpoint or, when there is none, says
      so in one line and starts fresh (from ``load_from`` if set); see :meth:`load_or_resume`.

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

    def load_or_resume(self):
        """Load or resume; ``resume='auto'`` resumes from the work dir's latest checkpoint, if any.

        ``resume='auto'`` (``--resume`` without a path) resumes from the checkpoint named by the
        work dir's ``last_checkpoint``; when there is none it says so in one line and starts fresh,
        from ``load_from`` if that is set. ``resume=True`` keeps mmengine's meaning: resume from
        ``load_from``, else from the latest checkpoint (where mmengine would log "Auto resumed from
        the latest checkpoint None." and pass an empty ``last_checkpoint`` on as a file name).
        """
        if self._has_loaded:
            return
        if self._resume == 'auto' or (self._resume and self._load_from is None):
            pointer = osp.join(self.work_dir, 'last_checkpoint')
            if osp.isfile(pointer):
                with open(pointer) as f:
                    latest = f.read().strip()
                if not latest:
                    raise CheckpointError(
                        f'{pointer} is empty. Write the path of the checkpoint to resume from into '
                        'it, or pass it as --resume PATH.')
                self.logger.info(f'Resuming from {latest}, the latest checkpoint ({pointer}).')
                self._resume, self._load_from = True, latest
            else:
                start = f'the weights of {self._load_from}' if self._load_from else 'scratch'
                self.logger.info(f'Resume: no checkpoint in {self.work_dir} (no last_checkpoint '
                                 f'file), training from {start}.')
                self._resume = False
        super().load_or_resume()

    def save_checkpoint(self, out_dir, filename, file_client_args=None, save_optimizer=True,
                        save_param_scheduler=True, meta=None, by_epoch=True, backend_args=None):
        """Save a checkpoint as mmengine does; to a local folder, atomically."""
        if (file_client_args is None and backend_args is None
                and isinstance(get_file_backend(out_dir), LocalBackend)):
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().save_checkpoint(out_dir, filename, file_client_args, save_optimizer,
                                save_param_scheduler, meta, by_epoch, backend_args)
