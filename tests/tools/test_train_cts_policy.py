"""tools/train_cts_policy.py: trains a loadable policy; refuses labels it cannot read, by path,
data sets smaller than a batch, folders as output and no iterations; saves as it trains."""
import contextlib
import importlib.util
import os
import os.path as osp
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmseg.registry import MODELS
from PIL import Image

import mmseg_custom  # noqa: F401
from mmseg_custom.engine.policy_training import train_policy

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'demo', 'vitsplit_tiny_shapes_cts.py')
TOOL = osp.join(REPO, 'tools', 'train_cts_policy.py')


def write_data(root, size=56, count=3):
    """Square images in mmseg layout; label: left half class 1, right half class 2."""
    for split in ('train', 'val'):
        os.makedirs(osp.join(root, 'img_dir', split))
        os.makedirs(osp.join(root, 'ann_dir', split))
        for i in range(count):
            label = np.ones((size, size), np.uint8)
            label[:, size // 2 + i:] = 2
            img = (label[..., None] * 80 + np.zeros((1, 1, 3), np.uint8)).astype(np.uint8)
            Image.fromarray(img).save(osp.join(root, 'img_dir', split, f'{i}.png'))
            Image.fromarray(label).save(osp.join(root, 'ann_dir', split, f'{i}.png'))


def options(root):
    """The demo CTS config on this data: mmseg's plain dataset class, PNG images."""
    opts = {}
    for split in ('train', 'val'):
        key = f'{split}_dataloader.dataset.'
        opts.update({key + 'type': 'BaseSegDataset', key + 'data_root': str(root),
                     key + 'img_suffix': '.png', key + 'seg_map_suffix': '.png'})
    return opts


def test_trains_and_writes_a_policy_the_model_loads(tmp_path):
    write_data(tmp_path / 'data')
    out = tmp_path / 'policy' / 'p.pth'
    stats = train_policy(CONFIG, str(out), iters=2, batch_size=2, val_images=2,
                         cfg_options=options(tmp_path / 'data'), log=lambda *a: None)
    # The demo CTS config resizes images to 224 px (its test pipeline leaves the label at 56 px;
    # the targets follow the image): 16x16 patches of 14 px, 8x8 superpatches of 28 px, 7 px of
    # the original each. Image 0 splits at column 28 (112 at 224), a superpatch border: 64
    # one-class; image 1 at 29 (116), inside superpatch column 4: 8 hold both classes.
    assert stats['val_superpatches'] == 2 * 64 and stats['patch_size'] == 14
    assert stats['val_positive'] == 100 * 120 / 128
    policy = MODELS.build(dict(type='CTSPolicyNet', pretrained=str(out)))
    policy.init_weights()
    saved = torch.load(out, weights_only=True)['state_dict']
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in saved.items())


def test_without_val_images_it_reports_no_accuracy(tmp_path):
    """--val-images 0 printed 'val superpatch accuracy nan % on 0 labelled superpatches'."""
    write_data(tmp_path / 'data')
    out, lines = tmp_path / 'p.pth', []
    stats = train_policy(CONFIG, str(out), iters=1, batch_size=2, val_images=0,
                         cfg_options=options(tmp_path / 'data'), log=lines.append)
    assert 'val_accuracy' not in stats and out.is_file()
    assert not any('nan' in line for line in lines), lines
    assert lines[-2] == 'no val evaluation (val images 0, or the config has no val_dataloader)'


def test_same_seed_gives_the_same_policy(tmp_path):
    """The random init was unseeded: two runs of one command gave different policies."""
    write_data(tmp_path / 'data')
    policies = []
    for name, seed in (('a', 3), ('b', 3), ('c', 4)):
        out = tmp_path / f'{name}.pth'
        train_policy(CONFIG, str(out), iters=2, batch_size=2, val_images=0, seed=seed,
                     cfg_options=options(tmp_path / 'data'), log=lambda *a: None)
        policies.append(torch.load(out, weights_only=True)['state_dict'])
    a, b, c = policies
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_refuses_a_label_it_cannot_read_naming_the_file(tmp_path):
    write_data(tmp_path / 'data')
    bad = tmp_path / 'data' / 'ann_dir' / 'train' / '0.png'
    bad.write_bytes(b'not a png')
    proc = subprocess.run(
        [sys.executable, TOOL, CONFIG, '--out', str(tmp_path / 'p.pth'), '--iters', '1',
         '--cfg-options', *[f'{k}={v}' for k, v in options(tmp_path / 'data').items()]],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1',
                 PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')])))
    assert proc.returncode != 0
    assert f'cannot read label map {bad}' in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / 'p.pth').exists()


def test_refuses_missing_labels_and_missing_dataset(tmp_path):
    write_data(tmp_path / 'data')
    gone = tmp_path / 'data' / 'ann_dir' / 'train' / '1.png'
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=str(gone)):
        train_policy(CONFIG, str(tmp_path / 'p.pth'), iters=1,
                     cfg_options=options(tmp_path / 'data'))
    nowhere = tmp_path / 'nowhere'
    with pytest.raises(FileNotFoundError, match=str(nowhere / 'img_dir' / 'train')):
        train_policy(CONFIG, str(tmp_path / 'p.pth'), iters=1, cfg_options=options(nowhere))


@contextlib.contextmanager
def time_limit(seconds):
    """Fail, instead of hanging, where the training used to loop forever."""
    def expired(signum, frame):
        raise TimeoutError(f'still running after {seconds} s')

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_refuses_a_train_set_smaller_than_the_batch(tmp_path):
    """With drop_last, 3 images and batch 8 gave no batch: the loop spun forever at 100 % CPU."""
    write_data(tmp_path / 'data', count=3)
    out = tmp_path / 'p.pth'
    folder = tmp_path / 'data' / 'img_dir' / 'train'
    with time_limit(120), pytest.raises(ValueError, match=re.escape(
            f'({folder}) has 3 image(s), fewer than one batch of 8. Lower the batch '
            '(--batch 3)')):
        train_policy(CONFIG, str(out), iters=1, batch_size=8, val_images=0,
                     cfg_options=options(tmp_path / 'data'), log=lambda *a: None)
    assert not out.exists()


def test_a_killed_run_keeps_the_last_intermediate_policy(tmp_path):
    """The policy was written only at the end: a kill lost all the training."""
    write_data(tmp_path / 'data')
    out, lines = tmp_path / 'new' / 'p.pth', []

    def log(line):
        lines.append(line)
        if line.startswith('iter 3/3'):
            raise KeyboardInterrupt  # killed after the last step, before the final save

    with pytest.raises(KeyboardInterrupt):
        train_policy(CONFIG, str(out), iters=3, batch_size=2, val_images=0, save_interval=1,
                     cfg_options=options(tmp_path / 'data'), log=log)
    assert lines[0] == f'created the folder {out.parent} for the policy'
    saves = [line for line in lines if line.startswith('Saving')]
    assert saves == [f'Saving the policy at {i} iterations to {out}' for i in (1, 2)]
    meta = torch.load(out, weights_only=True)['meta']
    assert meta['iter'] == 2 and meta['iters'] == 3
    assert os.listdir(out.parent) == ['p.pth']  # no temporary file left


def test_refuses_an_output_folder_before_training(tmp_path):
    """--out naming a folder failed only after all the training, leaving OUT.tmp behind."""
    write_data(tmp_path / 'data')
    lines = []
    with pytest.raises(IsADirectoryError, match=re.escape(
            f'--out {tmp_path} is a folder; name the policy file to write, e.g. '
            f'{tmp_path / "cts_policy.pth"}')):
        train_policy(CONFIG, str(tmp_path), iters=1, batch_size=2, val_images=0,
                     cfg_options=options(tmp_path / 'data'), log=lines.append)
    assert lines == []  # nothing trained
    assert sorted(os.listdir(tmp_path)) == ['data']


@pytest.mark.parametrize('option', ['--iters', '--batch', '--save-interval'])
def test_refuses_iterations_below_one_when_parsing(tmp_path, capsys, option):
    """--iters 0 wrote an untrained policy and said 'policy written'."""
    spec = importlib.util.spec_from_file_location('train_cts_policy', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as exit_:
        tool.main([CONFIG, '--out', str(tmp_path / 'p.pth'), option, '0'])
    assert exit_.value.code == 2
    assert f'argument {option}: 0 is not a positive number' in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='iters 0; it must be at least 1'):
        train_policy(CONFIG, str(tmp_path / 'p.pth'), iters=0)
