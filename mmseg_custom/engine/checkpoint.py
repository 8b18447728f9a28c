"""Checkpoints that survive torch >= 2.6 ``weights_only`` loading, crashes and truncation.

* ``allow_mmengine_checkpoint_globals()``, a context manager, allow-lists for
  ``torch.load(weights_only=True)`` exactly the non-tensor objects mmengine writes into a
  checkpoint: ``HistoryBuffer`` (message hub) and the numpy arrays, scalars and dtypes it holds.
  Nothing else is unpickled: a checkpoint cannot run code. Only our loader applies it, and only
  while it loads: other code in the process keeps torch's own allow-list. Wrap mmengine's loader
  in it to read an mmengine checkpoint on torch >= 2.6 with another loader.
* ``load_for_mmengine`` is mmengine's loader of local files once this module is imported
  (registered with mmengine's ``CheckpointLoader.register_scheme``): ``init_model(cfg, ckpt)``
  and ``load_checkpoint`` read through ``load_from_local``, and files without ``meta`` load.
* ``load_from_local`` is the loader of this package's load paths (``PortableRunner``: ``load_from``,
  ``--resume``, ``tools/test.py``; ``tools/image_demo.py``; ``tools/convert_checkpoint.py``): it
  loads with ``weights_only=True``, checks the archive's CRCs (torch does not), and turns a missing,
  empty, corrupt, truncated or unsafe file into an error that names the file and says what to do.
  ``load_state_dict_exactly`` refuses a checkpoint that does not fit the model.
* ``AtomicLocalBackend`` (file backend ``'atomic_local'``) writes a file to a temporary name in the
  same folder, fsyncs it and renames it over the target, so an interrupted save leaves the previous
  checkpoint intact instead of a truncated one. ``latest_checkpoint`` finds the newest complete
  checkpoint of a work dir; ``remove_unfinished_writes`` deletes the temporary files a killed save
  left behind.
"""
import contextlib
import os
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import List, Optional, Tuple

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.utils import mkdir_or_exist

from ..utils.atomic import TEMP_SUFFIX, write_atomic

ATOMIC_BACKEND = 'atomic_local'
# Names CheckpointHook gives checkpoints by default, and AtomicLocalBackend's temporary files.
CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
UNFINISHED_WRITE = re.compile(r'\.pth' + TEMP_SUFFIX.pattern)

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


@contextlib.contextmanager
def allow_mmengine_checkpoint_globals():
    """Within this context, ``weights_only`` loading accepts the objects mmengine saves in a
    checkpoint.

    Scoped rather than process-wide (``add_safe_globals``): our ``getattr`` stand-in must not answer
    for other code's loads. Globals the caller had allow-listed stay allow-listed on exit.
    """
    present = set(torch.serialization.get_safe_globals())
    extra = [g for g in (HistoryBuffer, (_history_buffer_statistic, 'builtins.getattr'),
                         *_numpy_globals()) if g not in present]
    with torch.serialization.safe_globals(extra):
        yield


class CheckpointError(RuntimeError):
    """A checkpoint (or weights) file exists but cannot be used; the message names it and says
    what to do."""


# What ``load_from_local`` tells the user about a damaged checkpoint: the likely cause, the fix.
CHECKPOINT_ADVICE = (
    'It was probably cut off while being written (a killed job, a full disk) or while being '
    "copied. Delete it, and the work dir's last_checkpoint file if it names it, then resume from "
    'an earlier checkpoint or copy the file again.')


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


def damaged_file_error(filename, damage, kind='Checkpoint', advice=CHECKPOINT_ADVICE):
    """The error for a file whose bytes are damaged: ``'{kind} {filename} is corrupt or
    truncated: {damage}. {advice}'``."""
    return CheckpointError(f'{kind} {filename} is corrupt or truncated: {damage}. {advice}')


class _NoGlobals(pickle.Unpickler):
    """Unpickles plain data only: any class or function in the stream is an error."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f'{module}.{name}')


def _is_legacy_torch(filename):
    """Whether ``filename`` is in torch's legacy (pre-zip) format: it opens with a magic number."""
    try:
        with open(filename, 'rb') as f:
            return _NoGlobals(f).load() == torch.serialization.MAGIC_NUMBER
    except Exception:  # noqa: BLE001 (not that format)
        return False


def _unsafe_format(filename, legacy, kind='Checkpoint'):
    """The error for a legacy-format file that weights_only refuses, or a plain pickle."""
    if legacy:
        what = ("in PyTorch's legacy (non-zip) format and holds Python objects that weights_only "
                'loading refuses')
        convert = ("ck = torch.load('IN.pth', map_location='cpu', weights_only=False); "
                   "torch.save(dict(state_dict=ck.get('state_dict', ck)), 'OUT.pth')")
    else:
        what = 'a plain pickle, not a PyTorch checkpoint'
        convert = "torch.save(pickle.load(open('IN.pth', 'rb')), 'OUT.pth')"
    return CheckpointError(
        f'{kind} {filename} is refused: it is not in a safe format. It is {what}; reading '
        'it could run any code it contains. If you trust the file, convert it once with\n'
        f'  python -c "import pickle, torch; {convert}"\nand use OUT.pth.')


def load_from_local(filename, map_location=None, kind='Checkpoint', advice=CHECKPOINT_ADVICE):
    """Load a local checkpoint with ``weights_only=True`` and check it; explain any failure.

    Weights files use it too (``mmseg_custom.models.weights.read_state_dict``), with their own
    ``kind`` and ``advice``.

    Args:
        filename (str): path of the checkpoint; ``~`` is expanded.
        map_location (str | torch.device | callable | None): as for :func:`torch.load`.
        kind (str): what the file is, for the messages ("Checkpoint", "DINOv2 weights file").
        advice (str): the likely cause and the fix, appended to the error for an empty or
            damaged file.

    Returns:
        dict: the loaded checkpoint.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is empty, corrupt or truncated, not in a safe format (a plain
            pickle, or a legacy-format file with objects weights_only refuses), or holds objects
            outside the allow-list.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{kind} {filename} does not exist.')
    if osp.getsize(filename) == 0:
        raise CheckpointError(f'{kind} {filename} is empty (0 bytes). {advice}')
    with open(filename, 'rb') as f:
        pickled = f.read(1) == b'\x80'  # a pickle protocol >= 2 opcode: not torch's zip format
    legacy = pickled and _is_legacy_torch(filename)
    if pickled and not legacy:
        raise _unsafe_format(filename, legacy=False, kind=kind)
    try:
        with allow_mmengine_checkpoint_globals():
            checkpoint = torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as err:
        if legacy:
            if isinstance(err, pickle.UnpicklingError):
                raise _unsafe_format(filename, legacy=True, kind=kind) from err
            raise damaged_file_error(filename, f'its legacy-format data cannot be read ({err})',
                                     kind, advice) from err
        damage = _zip_damage(filename)
        if damage is not None:
            raise damaged_file_error(filename, damage, kind, advice) from err
        if isinstance(err, pickle.UnpicklingError):
            raise CheckpointError(
                f'{kind} {filename} holds Python objects that mmseg_custom does not allow-list '
                'for weights_only loading, and unpickling them could run code. If you trust the '
                'file, re-save only its tensors (its "state_dict") and load that instead. '
                f'Details: {err}') from err
        raise
    # torch does not check the archive's CRCs: a damaged tensor would load as wrong weights.
    # Legacy files (weights_only reads them safely) have no CRCs to check.
    damage = None if legacy else _zip_damage(filename)
    if damage is not None:
        raise damaged_file_error(filename, damage, kind, advice)
    return checkpoint


def load_state_dict_exactly(model, checkpoint, filename):
    """Load ``checkpoint``'s state dict into ``model``, refusing one that does not fit it.

    For evaluation, inference and resuming, where a head left at random weights gives silent
    garbage: every parameter and buffer must be in the checkpoint with the model's shape, and the
    checkpoint must hold nothing else. The model's own load hooks (e.g. the conversion of original
    ViT-Split checkpoints) apply; a ``module.`` prefix (DDP) is removed.

    Args:
        model (nn.Module): the model; a DDP or test-time-augmentation wrapper is looked through.
        checkpoint (dict): a loaded checkpoint, with or without a ``state_dict`` entry.
        filename (str): its path, for the message.

    Raises:
        CheckpointError: naming each mismatched key with both shapes, or the missing and
            unexpected keys.
    """
    if is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    state_dict = checkpoint.get('state_dict', checkpoint)
    metadata = getattr(state_dict, '_metadata', None)
    state_dict = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in state_dict.items())
    if metadata is not None:
        state_dict._metadata = metadata
    problems = []
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # torch raises for shape mismatches whatever ``strict`` is
        problems = [line.strip() for line in str(err).splitlines() if 'size mismatch' in line]
        if not problems:
            raise
        missing, unexpected = [], []
    missing = [k for k in missing if not k.endswith('num_batches_tracked')]
    if missing:
        problems.append(f'{len(missing)} keys of the model are missing from the checkpoint: '
                        f'{_some(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} keys of the checkpoint are not in the model: '
                        f'{_some(unexpected)}')
    if problems:
        raise CheckpointError(
            f'Checkpoint {filename} does not fit the model built from the config:\n  '
            + '\n  '.join(problems) + '\nUse the config the checkpoint was trained with (its '
            'work dir holds a copy), or make the config match it (e.g. --cfg-options '
            'model.decode_head.num_classes=N).')


def load_checkpoint_exactly(model, filename, map_location='cpu'):
    """Read ``filename`` with :func:`load_from_local` and load it into ``model`` only if it fits
    exactly (:func:`load_state_dict_exactly`). Returns the checkpoint."""
    checkpoint = load_from_local(filename, map_location=map_location)
    load_state_dict_exactly(model, checkpoint, filename)
    return checkpoint


def _some(keys: List[str], n: int = 6) -> str:
    return ', '.join(keys[:n]) + (f' and {len(keys) - n} more' if len(keys) > n else '')


def _intact(path: str) -> bool:
    return osp.isfile(path) and osp.getsize(path) > 0 and _zip_damage(path) is None


def latest_checkpoint(work_dir: str) -> Tuple[Optional[str], str]:
    """The newest complete checkpoint of ``work_dir``, and a note on how it was found.

    ``last_checkpoint`` names the checkpoint saved last, but a job killed between writing a
    checkpoint and updating that file, or a file deleted since, makes it stale. So checkpoints
    named as ``CheckpointHook`` names them (``iter_N.pth``, ``epoch_N.pth``) in the work dir and
    in the folder ``last_checkpoint`` points into are considered too; the highest N wins, and
    files that are not intact zip archives (cut off, unfinished temporary files) are skipped.

    Returns:
        (path or None, note): None when there is no complete checkpoint.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
    folders = {osp.abspath(work_dir)}
    if named:
        folders.add(osp.dirname(osp.abspath(named)))
    steps = {}
    for folder in folders:
        for name in os.listdir(folder) if osp.isdir(folder) else []:
            match = CHECKPOINT_NAME.match(name)
            if match:
                steps[osp.join(folder, name)] = int(match.group(1))
    if named:
        match = CHECKPOINT_NAME.match(osp.basename(named))
        # A name of another pattern cannot be ordered: trust the pointer for it.
        steps[osp.abspath(named)] = int(match.group(1)) if match else float('inf')
    for path in sorted(steps, key=lambda p: (steps[p], p == osp.abspath(named or '')),
                       reverse=True):
        if _intact(path):
            if named and path == osp.abspath(named):
                return named, f'named by {pointer}'
            why = (f'{pointer} names {named}, which is older, missing or incomplete' if named
                   else f'no {pointer} file')
            return path, f'the newest complete checkpoint in its folder; {why}'
    if not steps:
        return None, f'no checkpoint in {work_dir}'
    return None, (f'no complete checkpoint in {work_dir}' +
                  (f' ({pointer} names {named}, which is missing or incomplete)' if named else ''))


def remove_unfinished_writes(folder: str) -> List[str]:
    """Delete the temporary files (``*.pth.tmp.PID.XXXXXXXX``, or ``*.pth.tmp.PID`` of earlier
    versions) of checkpoint writes that never finished.

    Call only when no save is under way in ``folder`` (at the start of training).

    Returns:
        list: the removed paths.
    """
    removed = []
    for name in os.listdir(folder) if osp.isdir(folder) else []:
        if UNFINISHED_WRITE.search(name):
            path = osp.join(folder, name)
            os.remove(path)
            removed.append(path)
    return removed


class AtomicLocalBackend(LocalBackend):
    """Local file backend whose ``put`` never leaves a partly written file under the target name.

    ``mmseg_custom.utils.atomic_write`` does it: a unique temporary file in the target's folder,
    fsynced, renamed over the target, and the folder fsynced.
    """

    def put(self, obj, filepath):
        """Write ``obj`` (bytes) to ``filepath`` atomically; create its folder if needed."""
        filepath = osp.abspath(str(filepath))
        mkdir_or_exist(osp.dirname(filepath))
        write_atomic(filepath, obj)


def load_for_mmengine(filename, map_location=None):
    """mmengine's loader of local checkpoints (``load_checkpoint``, so mmseg's ``init_model``):
    :func:`load_from_local`, and a file without ``meta`` (a bare state dict, an official release
    of another code base) gets an empty one, which ``init_model`` reads unconditionally."""
    checkpoint = load_from_local(filename, map_location=map_location)
    if isinstance(checkpoint, dict) and 'meta' not in checkpoint:
        if 'state_dict' not in checkpoint and checkpoint and all(
                isinstance(v, torch.Tensor) for v in checkpoint.values()):
            checkpoint = {'state_dict': checkpoint}
        checkpoint['meta'] = {}
    return checkpoint


# force: a reload of this module (autoreload, importlib.reload) re-registers the same name.
register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
# Through mmengine's own scheme registry, so that init_model reads our checkpoints on torch >= 2.6
# with the allow-list applied only while it loads (and CRC-checked); other loads are untouched.
CheckpointLoader.register_scheme(prefixes='', loader=load_for_mmengine, force=True)
