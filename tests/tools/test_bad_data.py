"""Bad data stops tools/train.py and tools/test.py with one message naming the file and the fix."""
import os
import os.path as osp
import sys

import numpy as np
import pytest
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN, TEST = osp.join(REPO, 'tools', 'train.py'), osp.join(REPO, 'tools', 'test.py')


@pytest.fixture
def data_root(tmp_path, make_tiny_dataset):
    root = tmp_path / 'data'
    make_tiny_dataset(str(root))
    return root


def on_data(root):
    return ['--cfg-options'] + [f'{split}_dataloader.dataset.data_root={root}'
                                for split in ('train', 'val', 'test')]


def put_label_values(path, values):
    label = np.asarray(Image.open(path)).copy()
    label[:len(values), 0] = values
    Image.fromarray(label).save(path)


def test_train_stops_on_label_values_out_of_range(run, tiny_config, data_root, tmp_path):
    bad = data_root / 'ann_dir' / 'train' / '2.png'
    put_label_values(bad, [200, 7])
    proc = run([sys.executable, TRAIN, tiny_config, '--work-dir', str(tmp_path / 'w'),
                *on_data(data_root)])
    assert proc.returncode != 0
    assert f'{bad}: label values 7, 200 are not classes of this data set (0..2)' in proc.stdout, \
        proc.stdout[-3000:]
    assert 'IndexError' not in proc.stdout


def test_test_stops_on_label_values_out_of_range(run, tiny_config, full_run, data_root,
                                                 tmp_path):
    bad = data_root / 'ann_dir' / 'val' / '1.png'
    put_label_values(bad, [3])
    proc = run([sys.executable, TEST, tiny_config, str(full_run[0] / 'iter_4.pth'),
                '--work-dir', str(tmp_path / 'w'), *on_data(data_root)])
    assert proc.returncode != 0, 'test.py evaluated labels that name no class'
    assert f'{bad}: label values 3 are not classes' in proc.stdout, proc.stdout[-3000:]


def test_ignore_index_is_accepted(run, tiny_config, full_run, data_root, tmp_path):
    put_label_values(data_root / 'ann_dir' / 'val' / '1.png', [255])
    proc = run([sys.executable, TEST, tiny_config, str(full_run[0] / 'iter_4.pth'),
                '--work-dir', str(tmp_path / 'w'), *on_data(data_root)])
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_image_and_label_of_different_sizes(run, tiny_config, full_run, data_root, tmp_path,
                                            tool):
    split = 'train' if tool == 'train' else 'val'
    bad = data_root / 'ann_dir' / split / '1.png'
    Image.fromarray(np.zeros((32, 30), np.uint8)).save(bad)
    args = [TRAIN, tiny_config] if tool == 'train' else [TEST, tiny_config,
                                                         str(full_run[0] / 'iter_4.pth')]
    proc = run([sys.executable, *args, '--work-dir', str(tmp_path / 'w'), *on_data(data_root)])
    assert proc.returncode != 0
    img = data_root / 'img_dir' / split / '1.png'
    assert (f'{img} is 32x32 px but its label map {bad} is 30x32 px ({tool} split)'
            in proc.stdout), proc.stdout[-3000:]
    assert not (tmp_path / 'w').exists(), 'the check comes before any work'


def test_empty_split(run, tiny_config, full_run, data_root, tmp_path):
    for name in os.listdir(data_root / 'img_dir' / 'val'):
        os.remove(data_root / 'img_dir' / 'val' / name)
    proc = run([sys.executable, TEST, tiny_config, str(full_run[0] / 'iter_4.pth'),
                '--work-dir', str(tmp_path / 'w'), *on_data(data_root)])
    assert proc.returncode != 0
    assert (f"The test split of BaseSegDataset is empty: no image ending in '.png' in "
            f"{data_root / 'img_dir' / 'val'}") in proc.stdout, proc.stdout[-3000:]
    assert 'need at least one array' not in proc.stdout


def test_test_time_augmentation_runs(run, tiny_config, full_run, tmp_path):
    proc = run([sys.executable, TEST, tiny_config, str(full_run[0] / 'iter_4.pth'), '--tta',
                '--work-dir', str(tmp_path / 'w')])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'mIoU' in proc.stdout


def test_test_batch_of_mixed_image_sizes(run, tiny_config, full_run, data_root, tmp_path):
    small_img = data_root / 'img_dir' / 'val' / '1.png'
    Image.fromarray(np.zeros((12, 20, 3), np.uint8)).save(small_img)
    Image.fromarray(np.zeros((12, 20), np.uint8)).save(data_root / 'ann_dir' / 'val' / '1.png')
    proc = run([sys.executable, TEST, tiny_config, str(full_run[0] / 'iter_4.pth'),
                '--work-dir', str(tmp_path / 'w'), *on_data(data_root),
                'test_dataloader.batch_size=2'])
    assert proc.returncode != 0
    assert 'A test batch holds images of different sizes after the test pipeline' in proc.stdout
    assert f'{small_img} (12x20 px)' in proc.stdout, proc.stdout[-3000:]
    assert 'test_dataloader.batch_size=1' in proc.stdout
    assert 'The image size in a batch should be the same' not in proc.stdout


def test_label_map_with_a_one_pixel_side(run, tiny_config, full_run, data_root, tmp_path):
    bad = data_root / 'ann_dir' / 'val' / '1.png'
    Image.fromarray(np.zeros((1, 7, 3), np.uint8)).save(data_root / 'img_dir' / 'val' / '1.png')
    Image.fromarray(np.zeros((1, 7), np.uint8)).save(bad)
    proc = run([sys.executable, TEST, tiny_config, str(full_run[0] / 'iter_4.pth'),
                '--work-dir', str(tmp_path / 'w'), *on_data(data_root)])
    assert proc.returncode != 0
    assert f'{bad} is 7x1 px (test split)' in proc.stdout, proc.stdout[-3000:]
    assert 'The dim of value must be 2 or 3' not in proc.stdout
    assert not (tmp_path / 'w').exists(), 'the check comes before any work'
