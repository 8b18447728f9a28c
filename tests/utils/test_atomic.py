"""atomic_write: the target holds the old bytes or the new ones, never a part; the file and its
folder are fsynced; every write has its own temporary name; every writer of the package uses it."""
import importlib.util
import os
import os.path as osp
import stat

import pytest
import torch

from mmseg_custom.engine import AtomicLocalBackend
from mmseg_custom.engine.checkpoint import UNFINISHED_WRITE, remove_unfinished_writes
from mmseg_custom.utils import atomic_write, write_atomic
from mmseg_custom.utils.atomic import TEMP_SUFFIX

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fsyncs(monkeypatch):
    """The kinds ('file', 'folder') of what os.fsync is called on, in order."""
    calls, fsync = [], os.fsync

    def recording(fd):
        calls.append('folder' if stat.S_ISDIR(os.fstat(fd).st_mode) else 'file')
        return fsync(fd)

    monkeypatch.setattr(os, 'fsync', recording)
    return calls


def test_writes_bytes_and_text_and_leaves_nothing_else(tmp_path, fsyncs):
    write_atomic(tmp_path / 'a.bin', b'\x00bytes')
    with atomic_write(tmp_path / 'b.txt', 'w') as f:
        f.write('tëxt')
    assert (tmp_path / 'a.bin').read_bytes() == b'\x00bytes'
    assert (tmp_path / 'b.txt').read_text(encoding='utf-8') == 'tëxt'
    assert sorted(os.listdir(tmp_path)) == ['a.bin', 'b.txt']
    assert fsyncs == ['file', 'folder'] * 2


@pytest.mark.parametrize('failure', ['in the body', 'at the fsync'])
def test_a_failure_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, monkeypatch,
                                                                      failure):
    target = tmp_path / 'p.pth'
    write_atomic(target, b'old')
    with pytest.raises(KeyboardInterrupt):
        if failure == 'at the fsync':
            def killed(fd):
                raise KeyboardInterrupt
            monkeypatch.setattr(os, 'fsync', killed)
        with atomic_write(target) as f:
            f.write(b'new, never complete')
            if failure == 'in the body':
                raise KeyboardInterrupt
    assert target.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['p.pth']


def test_each_write_has_its_own_temporary_name(tmp_path):
    """A fixed name (``out + '.tmp'``) let two writers of one target write into one file."""
    target = tmp_path / 'iter_2.pth'
    with atomic_write(target) as first, atomic_write(target) as second:
        first.write(b'first')
        second.write(b'second')
        temps = sorted(os.listdir(tmp_path))
        assert len(temps) == 2 and all(UNFINISHED_WRITE.search(n) for n in temps), temps
        assert all(TEMP_SUFFIX.search(n).group(1) == str(os.getpid()) for n in temps)
    assert target.read_bytes() == b'first'  # the outer write finished last
    assert os.listdir(tmp_path) == ['iter_2.pth']


def test_permissions_are_those_of_a_plain_open(tmp_path):
    """tempfile.mkstemp creates 0600 files: a shared checkpoint would be unreadable to others."""
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / 'shared.pth', b'x')
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / 'shared.pth').st_mode) == 0o644


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f'its folder {tmp_path / "no"} does not exist'):
        write_atomic(tmp_path / 'no' / 'p.pth', b'x')


def test_unfinished_writes_of_both_name_schemes_are_removed(tmp_path):
    for name in ('iter_4.pth', 'iter_6.pth.tmp.123', 'iter_6.pth.tmp.123.0badf00d', 'a.json.tmp.1'):
        (tmp_path / name).write_bytes(b'x')
    removed = remove_unfinished_writes(str(tmp_path))
    assert sorted(map(osp.basename, removed)) == ['iter_6.pth.tmp.123',
                                                  'iter_6.pth.tmp.123.0badf00d']


def _policy(path):
    from mmseg_custom.engine.policy_training import save_policy
    save_policy(torch.nn.Linear(2, 2), dict(iters=1), str(path))


def _compare_results(path):
    load_tool('compare')._write_json(str(path), dict(rows=[]))


def _converted(path):
    src = osp.join(osp.dirname(path), 'original.pth')
    if not osp.exists(src):
        torch.save(dict(state_dict={'decode_head.conv_seg.weight': torch.zeros(2)}), src)
    load_tool('convert_checkpoint').convert(src, str(path))


def _trunk_weights(path):
    load_tool('pretrain_tiny_trunk').save_fp16({'w': torch.ones(3)}, str(path), {'k': 'v'})


WRITERS = {'checkpoint': lambda path: AtomicLocalBackend().put(b'checkpoint', path),
           'cts policy': _policy, 'compare results': _compare_results,
           'converted checkpoint': _converted, 'pretrained trunk': _trunk_weights}


@pytest.mark.parametrize('writer', WRITERS)
def test_every_writer_syncs_and_survives_a_kill(tmp_path, monkeypatch, fsyncs, writer):
    """The policy, compare's results and the trunk weights were not fsynced; the converter did
    not fsync the folder (a power loss could undo its rename)."""
    target = tmp_path / 'out.file'
    WRITERS[writer](target)
    assert fsyncs[-2:] == ['file', 'folder'], fsyncs
    old = target.read_bytes()

    def killed(fd):
        raise KeyboardInterrupt  # the job is stopped after writing, before the rename

    monkeypatch.setattr(os, 'fsync', killed)
    with pytest.raises(KeyboardInterrupt):
        WRITERS[writer](target)
    assert target.read_bytes() == old
    assert not [n for n in os.listdir(tmp_path) if '.tmp' in n]


def test_trunk_weights_are_the_bytes_safetensors_save_file_writes(tmp_path):
    """The shipped asset must still be rebuilt bit for bit."""
    from safetensors.torch import save_file
    tensors = {'b': torch.arange(6.).reshape(2, 3), 'a': torch.ones(4)}
    save_file({k: v.half() for k, v in tensors.items()}, tmp_path / 'reference.safetensors',
              metadata={'pretrain': '{}'})
    load_tool('pretrain_tiny_trunk').save_fp16(tensors, str(tmp_path / 'ours.safetensors'),
                                               {'pretrain': '{}'})
    assert ((tmp_path / 'ours.safetensors').read_bytes()
            == (tmp_path / 'reference.safetensors').read_bytes())


def test_the_data_set_is_on_disk_before_its_marker(tmp_path, monkeypatch, fsyncs):
    """Images are not fsynced one by one (thousands of files); one os.sync() precedes the
    marker, which is written atomically and durably."""
    from mmseg_custom.datasets import generate_dataset
    from mmseg_custom.datasets.synthetic_shapes import MARKER
    root = tmp_path / 'shapes'
    syncs = []
    monkeypatch.setattr(os, 'sync', lambda: syncs.append((root / MARKER).exists()))
    generate_dataset(str(root), num_train=2, num_val=1, size=32, verbose=False, workers=1)
    assert syncs == [False]
    assert fsyncs == ['file', 'folder']  # the marker's
    assert (root / MARKER).is_file()
    assert sorted(os.listdir(root / 'img_dir' / 'train')) == ['00000.png', '00001.png']
