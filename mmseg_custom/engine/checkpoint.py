"""Checkpoints that survive torch >= 2.6 ``weights_only`` loading, crashes and truncation.

* ``allow_mmengine_checkpoint_globals`` allow-lists, for ``torch.load(weights_only=True)``, exactly
  the non-tensor objects mmengine writes into a checkpoint: ``HistoryBuffer`` (message hub) and the
  numpy arrays, scalars and dtypes it holds. Nothing else is unpickled: a checkpoint cannot run
  code.
* ``load_from_local`` replaces mmengine's loader for local paths (``load_from``, ``--resume``,
  ``init_model``, ``init_cfg=dict(type='Pretrained')``): it loads with ``weights_only=True``, checks
  the archive's CRCs (torch does not), and turns a missing, corrupt or truncated file into an error
  that names the file and says what to do.
* ``AtomicLocalBackend`` (file backend ``'atomic_local'``) writes a file to a temporary name in the
  same folder, fsyncs it and renames it over the target, so an interrupted save leaves the previous
  checkpoint intact instead of a truncated one.

Importing this module registers all three.
"""
import os
import os.path as osp
import pickle
import zipfile

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.utils import mkdir_or_exist

ATOMIC_BACKEND = 'atomic_local'

# The statistics HistoryBuffer pickles with its state, as ``getattr(HistoryBuffer, name)``.
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_statistic(owner, name):
    """Stand-in for ``builtins.getattr`` while unpickling a checkpoint.

    ``HistoryBuffer.__getstate__`` stores its statistic methods, which pickle as
    ``getattr(HistoryBuffer, 'mean')``. Allow-listing ``getattr`` itself would let a checkpoint read
    any attribute of any allow-listed object; this resolves those four methods and refuses the rest.
    """
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'the checkpoint asks for getattr({owner!r}, {name!r}); only the statistic methods of '
        f'mmengine HistoryBuffer {_HISTORY_BUFFER_STATISTICS} are allowed')


def _numpy_globals():
    """Numpy objects in mmengine checkpoints: arrays, scalars and the dtypes of numeric data.

    Arrays and scalars pickle through ``numpy.core.multiarray`` (numpy 1.x) or ``numpy._core``
    (numpy 2.x), depending on the numpy that wrote the file; both names map to the same function.
    """
    multiarray = np.core.multiarray
    dtype_classes = [type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
        np.float16, np.float32, np.float64)]
    return [np.ndarray, np.dtype, *dtype_classes] + [
        (func, f'{module}.{func.__name__}')
        for func in (multiarray._reconstruct, multiarray.scalar)
        for module in ('numpy.core.multiarray', 'numpy._core.multiarray')]


def allow_mmengine_checkpoint_globals():
    """Allow-list, for ``weights_only`` loading, the objects mmengine saves in a checkpoint."""
    torch.serialization.add_safe_globals(
        [HistoryBuffer, (_history_buffer_statistic, 'builtins.getattr'), *_numpy_globals()])


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used; the message names it and says what to do."""


def _zip_damage(filename):
    """Return why ``filename`` is not an intact zip archive (torch's format), or None if it is."""
    if not zipfile.is_zipfile(filename):
        return 'it is not a complete zip archive'
    try:
        with zipfile.ZipFile(filename) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f'its zip archive cannot be read ({err})'
    return None if bad is None else f'member {bad} fails its CRC check'


def _corrupt(filename, damage):
    """The error for a checkpoint whose bytes are damaged."""
    return CheckpointError(
        f'Checkpoint {filename} is corrupt or truncated: {damage}. It was probably cut off while '
        'being written (a killed job, a full disk) or while being copied. Delete it, and the '
        "work dir's last_checkpoint file if it names it, then resume from an earlier checkpoint "
        'or copy the file again.')


def load_from_local(filename, map_location=None):
    """Load a local checkpoint with ``weights_only=True`` and check it; explain any failure.

    Registered as mmengine's checkpoint loader for local paths.

    Args:
        filename (str): path of the checkpoint; ``~`` is expanded.
        map_location (str | torch.device | callable | None): as for :func:`torch.load`.

    Returns:
        dict: the loaded checkpoint.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is corrupt or truncated, or holds objects outside the allow-list.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint {filename} does not exist.')
    try:
        checkpoint = torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as err:
        damage = _zip_damage(filename)
        if damage is not None:
            raise _corrupt(filename, damage) from err
        if isinstance(err, pickle.UnpicklingError):
            raise CheckpointError(
                f'Checkpoint {filename} holds Python objects that mmseg_custom does not allow-list '
                'for weights_only loading, and unpickling them could run code. If you trust the '
                'file, re-save only its tensors (its "state_dict") and load that instead. '
                f'Details: {err}') from err
        raise
    # torch does not check the archive's CRCs: a damaged tensor would load as wrong weights.
    # Legacy (pre-zip) files have no CRCs to check.
    damage = _zip_damage(filename) if zipfile.is_zipfile(filename) else None
    if damage is not None:
        raise _corrupt(filename, damage)
    return checkpoint


class AtomicLocalBackend(LocalBackend):
    """Local file backend whose ``put`` never leaves a partly written file under the target name.

    The bytes go to ``<target>.tmp.<pid>`` in the target's folder (same file system, so the rename
    is atomic), are flushed and fsynced, and the file is then renamed over the target.
    """

    def put(self, obj, filepath):
        """Write ``obj`` (bytes) to ``filepath`` atomically; create its folder if needed."""
        filepath = osp.abspath(str(filepath))
        folder = osp.dirname(filepath)
        mkdir_or_exist(folder)
        tmp = f'{filepath}.tmp.{os.getpid()}'
        try:
            with open(tmp, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise
        # Persist the rename itself: without this a power loss can still undo it.
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


allow_mmengine_checkpoint_globals()
CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
register_backend(ATOMIC_BACKEND, AtomicLocalBackend)
