import filecmp
import glob
import json
import os
import os.path as osp
import shutil

import numpy as np
import pytest
from PIL import Image

from mmseg_custom.datasets import synthetic_shapes as ss
from mmseg_custom.datasets.synthetic_shapes import (CLASSES, MARKER, PENDING, generate_dataset,
                                                     generate_sample)


def _files(root, kind, split):
    return sorted(os.listdir(osp.join(root, kind, split)))


def test_sample_shapes_and_values():
    img, label = generate_sample(np.random.default_rng(0), size=112)
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    assert label.shape == (112, 112) and label.dtype == np.uint8
    assert label.max() < len(CLASSES)
    assert (label > 0).any() and (label == 0).any()


def test_sample_is_deterministic():
    a = generate_sample(np.random.default_rng([3, 0, 7]))
    b = generate_sample(np.random.default_rng([3, 0, 7]))
    c = generate_sample(np.random.default_rng([4, 0, 7]))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_layout_and_marker(tmp_path):
    root = str(tmp_path / 'shapes')
    assert generate_dataset(root, num_train=6, num_val=3, size=56, seed=1, verbose=False)
    for kind in ('img_dir', 'ann_dir'):
        assert _files(root, kind, 'train') == [f'{i:05d}.png' for i in range(6)]
        assert _files(root, kind, 'val') == [f'{i:05d}.png' for i in range(3)]
    img = np.asarray(Image.open(osp.join(root, 'img_dir', 'train', '00000.png')))
    ann = np.asarray(Image.open(osp.join(root, 'ann_dir', 'train', '00000.png')))
    assert img.shape == (56, 56, 3) and ann.shape == (56, 56) and ann.max() < len(CLASSES)
    with open(osp.join(root, MARKER)) as f:
        assert json.load(f)['num_train'] == 6
    assert not [name for name in os.listdir(root) if 'tmp' in name]


def test_objects_keep_their_outline():
    """Objects lie (almost) wholly inside the image: a shape cut by the border could not be told
    from another class."""
    border = np.zeros((112, 112), bool)
    border[[0, -1]] = border[:, [0, -1]] = True
    labels = [generate_sample(np.random.default_rng([0, 0, i]))[1] for i in range(60)]
    on_border = np.mean([(label[border] > 0).mean() for label in labels])
    assert on_border < 0.06  # 0.20 when objects were placed anywhere
    # Every class shows up, and objects cover a good part of the image.
    stacked = np.stack(labels)
    assert set(np.unique(stacked)) == set(range(len(CLASSES)))
    assert 0.2 < (stacked > 0).mean() < 0.6


def test_dataset_is_deterministic(tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    # Serial and pooled writing give the same files (210 images: three jobs of up to 100).
    for root, workers in ((a, 1), (b, 3)):
        generate_dataset(root, num_train=210, num_val=2, size=56, seed=5, verbose=False,
                         workers=workers)
    for kind in ('img_dir', 'ann_dir'):
        for split in ('train', 'val'):
            cmp = filecmp.dircmp(osp.join(a, kind, split), osp.join(b, kind, split))
            assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
            _, mismatch, errors = filecmp.cmpfiles(
                osp.join(a, kind, split), osp.join(b, kind, split), _files(a, kind, split),
                shallow=False)
            assert not mismatch and not errors


def test_reuse_and_regenerate(tmp_path):
    root = str(tmp_path / 'shapes')
    params = dict(num_train=4, num_val=2, size=56, seed=0, verbose=False)
    assert generate_dataset(root, **params)
    probe = osp.join(root, 'img_dir', 'train', '00000.png')
    stamp = os.stat(probe).st_mtime_ns
    assert not generate_dataset(root, **params)  # complete: reused, nothing written
    assert os.stat(probe).st_mtime_ns == stamp

    # Other parameters: the old files are replaced, none left over.
    assert generate_dataset(root, **dict(params, num_train=2))
    assert _files(root, 'img_dir', 'train') == ['00000.png', '00001.png']

    # An interrupted run (its .writing marker left, no .complete) is redone from scratch.
    os.replace(osp.join(root, MARKER), osp.join(root, PENDING))
    os.remove(probe)
    assert generate_dataset(root, **dict(params, num_train=2))
    assert osp.isfile(probe) and osp.isfile(osp.join(root, MARKER))
    assert not osp.exists(osp.join(root, PENDING))


def _copy_without_markers(src, dst):
    """What `cp -r src/* dst` or a file manager hiding dot files gives: no .complete."""
    os.makedirs(dst)
    for sub in ('img_dir', 'ann_dir'):
        shutil.copytree(osp.join(src, sub), osp.join(dst, sub))


def test_copy_without_marker_is_recognised_by_content(tmp_path):
    params = dict(num_train=4, num_val=2, size=56, seed=3, verbose=False)
    generate_dataset(str(tmp_path / 'orig'), **params)
    copy = str(tmp_path / 'copy')
    _copy_without_markers(str(tmp_path / 'orig'), copy)
    stamps = {p: os.stat(p).st_mtime_ns for p in glob.glob(f'{copy}/*/*/*.png')}
    assert not generate_dataset(copy, **params)  # reused: nothing written or removed
    assert {p: os.stat(p).st_mtime_ns for p in glob.glob(f'{copy}/*/*/*.png')} == stamps
    assert sorted(os.listdir(copy)) == ['ann_dir', 'img_dir']


def test_marker_less_files_that_differ_are_never_overwritten(tmp_path):
    params = dict(num_train=4, num_val=2, size=56, seed=3, verbose=False)
    generate_dataset(str(tmp_path / 'orig'), **params)
    copy = str(tmp_path / 'copy')
    _copy_without_markers(str(tmp_path / 'orig'), copy)
    # Asked for another seed, or a file is missing: not the data set asked for, and not ours to
    # delete (no marker says generate_dataset wrote it).
    before = sorted(glob.glob(f'{copy}/*/*/*.png'))
    with pytest.raises(FileExistsError, match='nothing was changed'):
        generate_dataset(copy, **dict(params, seed=4))
    os.remove(osp.join(copy, 'ann_dir', 'val', '00001.png'))
    with pytest.raises(FileExistsError, match='nothing was changed'):
        generate_dataset(copy, **params)
    assert sorted(glob.glob(f'{copy}/*/*/*.png')) == [
        p for p in before if not p.endswith(osp.join('ann_dir', 'val', '00001.png'))]


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / 'notes.txt').write_text('not ours')
    with pytest.raises(FileExistsError):
        generate_dataset(str(tmp_path), num_train=2, num_val=1, verbose=False)
    assert (tmp_path / 'notes.txt').exists()


def test_class_balance_and_colour_independence():
    """Every class is common, background does not swamp them, and colour does not give the class."""
    counts = np.zeros(len(CLASSES))
    present = np.zeros(len(CLASSES))
    colour_sum = np.zeros((len(CLASSES), 3))
    for i in range(120):
        img, label = generate_sample(ss._sample_rng(0, 'train', i))
        counts += np.bincount(label.ravel(), minlength=len(CLASSES))
        present += np.bincount(np.unique(label), minlength=len(CLASSES))
        for c in np.unique(label):
            colour_sum[c] += img[label == c].mean(axis=0)
    share = counts / counts.sum()
    assert 0.4 < share[0] < 0.75, share
    assert (share[1:] > 0.03).all(), share
    assert (present[1:] >= 0.25 * 120).all(), present
    mean_colour = colour_sum / present[:, None]
    # Random colours per object: every class averages to a mid grey, not a signature colour.
    assert (np.abs(mean_colour[1:] - 127.5) < 30).all(), mean_colour


def test_mmseg_dataset(tmp_path):
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope

    from mmseg_custom.datasets import SyntheticShapesDataset
    init_default_scope('mmseg')

    root = str(tmp_path / 'shapes')
    generate_dataset(root, num_train=3, num_val=2, size=56, verbose=False)
    dataset = SyntheticShapesDataset(
        data_root=root, data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='PackSegInputs')])
    assert len(dataset) == 2
    assert dataset.metainfo['classes'] == CLASSES
    sample = dataset[0]
    assert tuple(sample['inputs'].shape) == (3, 56, 56)
    assert int(sample['data_samples'].gt_sem_seg.data.max()) < len(CLASSES)

    with pytest.raises(FileNotFoundError, match='python -m mmseg_custom.datasets'):
        SyntheticShapesDataset(data_root=str(tmp_path / 'missing'),
                               data_prefix=dict(img_path='img_dir/val',
                                                seg_map_path='ann_dir/val'))


def test_mmseg_dataset_accepts_a_complete_copy_without_marker(tmp_path):
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope

    from mmseg_custom.datasets import SyntheticShapesDataset
    init_default_scope('mmseg')

    generate_dataset(str(tmp_path / 'orig'), num_train=3, num_val=2, size=56, verbose=False)
    copy = str(tmp_path / 'copy')
    _copy_without_markers(str(tmp_path / 'orig'), copy)

    def build():
        return SyntheticShapesDataset(
            data_root=copy, data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
            pipeline=[])

    assert len(build()) == 2
    # An incomplete copy names what is missing.
    os.remove(osp.join(copy, 'ann_dir', 'val', '00001.png'))
    with pytest.raises(FileNotFoundError, match='00001.png'):
        build()
