"""A ``CheckpointHook`` that never deletes a checkpoint before its successor is complete."""
from contextlib import contextmanager

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

from .checkpoint import remove_unfinished_writes


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` are recorded instead of done."""

    def __init__(self, backend):
        self._backend = backend
        self.pending = []

    def remove(self, path):
        self.pending.append(path)

    def rmtree(self, path):
        self.pending.append(path)

    def __getattr__(self, name):
        return getattr(self._backend, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, except that outdated checkpoints are deleted only after the
    new one is written and named in ``last_checkpoint``.

    mmengine deletes the oldest checkpoint (``max_keep_ckpts``) and the previous best one
    (``save_best``) *before* writing the new one: a job killed during the write, with
    ``max_keep_ckpts=1``, has no checkpoint left. Here the deletions wait until the save has
    finished, and at the start of training the temporary files of writes a killed job never
    finished (``*.pth.tmp.PID.XXXXXXXX``, see ``AtomicLocalBackend``) are removed.
    ``PortableRunner`` uses this hook wherever a config asks for ``CheckpointHook``. Arguments are
    ``CheckpointHook``'s.
    """

    _deferred = None

    def before_train(self, runner):
        super().before_train(runner)
        if is_main_process():
            removed = remove_unfinished_writes(self.out_dir)
            if removed:
                runner.logger.info(f'Removed {len(removed)} unfinished checkpoint file(s) of an '
                                   f'interrupted save: {", ".join(removed)}')

    @contextmanager
    def _removals_after_save(self):
        """Record the deletions asked for inside; do them when the outermost save succeeded."""
        if self._deferred is not None:  # a nested save (mmengine re-saves after a new best)
            yield
            return
        self._deferred = _DeferredRemoval(self.file_backend)
        self.file_backend = self._deferred
        try:
            yield
            pending = self._deferred.pending
        finally:
            self.file_backend, self._deferred = self._deferred._backend, None
        current = {self.last_ckpt, getattr(self, 'best_ckpt_path', None),
                   *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for path in pending:
            if path in current:  # saved again under the same name: the new file
                continue
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints are folders
                self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner, step, meta):
        with self._removals_after_save():
            super()._save_checkpoint_with_step(runner, step, meta)

    def _save_best_checkpoint(self, runner, metrics):
        with self._removals_after_save():
            super()._save_best_checkpoint(runner, metrics)
