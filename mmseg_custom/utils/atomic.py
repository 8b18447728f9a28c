"""Write a file atomically: readers, and whatever survives a kill or a power loss, see the old
content or the new one, never a part.

The bytes go to a temporary file in the target's folder (the same file system, so the rename is
atomic), which is flushed, fsynced and renamed over the target; then the folder is fsynced, so
that the rename itself survives a power loss. The temporary name is
``<target>.tmp.<pid>.<8 hex digits>``: unique for every write, also for two threads or processes
writing one target, and it says which process left it (``TEMP_SUFFIX`` matches it). On any
failure, KeyboardInterrupt included, the temporary file is removed and the target is untouched.
"""
import contextlib
import errno
import os
import os.path as osp
import re
import secrets

# What a temporary name adds to its target's name. The random part is optional so that files
# left by the earlier ``<target>.tmp.<pid>`` scheme are recognised too.
TEMP_SUFFIX = re.compile(r'\.tmp\.(\d+)(?:\.[0-9a-f]{8})?$')


def fsync_dir(folder):
    """Make the entries of ``folder`` (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        # Some file systems cannot fsync a folder; the file itself is synced already.
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _create_temp(path, mode, encoding):
    """Open a new temporary file beside ``path``; return (file, its path)."""
    folder = osp.dirname(osp.abspath(path))
    if not osp.isdir(folder):
        raise FileNotFoundError(f'Cannot write {path}: its folder {folder} does not exist.')
    for _ in range(100):
        tmp = f'{path}.tmp.{os.getpid()}.{secrets.token_hex(4)}'
        try:
            # 'x' (O_EXCL): a file of our own, never one another writer created. Unlike
            # tempfile.mkstemp (always 0600) the file gets the permissions ``open`` gives.
            return open(tmp, 'x' + mode[1:], encoding=encoding), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f'no free temporary name for {path} after 100 tries')


@contextlib.contextmanager
def atomic_write(path, mode='wb', encoding='utf-8', sync=True):
    """Open a temporary file to write; on success it replaces ``path`` atomically.

    Args:
        path (str | os.PathLike): the target; its folder must exist.
        mode (str): ``'wb'`` (bytes) or ``'w'`` (text). Default: ``'wb'``.
        encoding (str): text mode's encoding. Default: ``'utf-8'``.
        sync (bool): fsync the file and its folder. Without, the write is still atomic for other
            processes and against a killed writer, but not against a power loss; for many small
            files made durable together (e.g. with ``os.sync()``) before a marker says they are
            complete. Default: True.

    Yields:
        file: the open temporary file.

    Example:
        >>> with atomic_write('policy.pth') as f:
        ...     torch.save(obj, f)
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_write: mode {mode!r}; use "wb" (bytes) or "w" (text)')
    path = os.fspath(path)
    f, tmp = _create_temp(path, mode, encoding if mode == 'w' else None)
    try:
        with f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(osp.dirname(osp.abspath(path)))


def write_atomic(path, data, sync=True):
    """Write ``data`` (bytes or str, UTF-8) to ``path`` with :func:`atomic_write`."""
    with atomic_write(path, 'wb' if isinstance(data, (bytes, bytearray, memoryview)) else 'w',
                      sync=sync) as f:
        f.write(data)
