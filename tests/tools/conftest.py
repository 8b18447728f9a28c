"""Fixtures of the launcher tests: a tiny data set, and runs of the tools as a user makes them."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'tests', 'tools', 'tiny_seg_config.py')
PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)


def write_tiny_dataset(root, size=32, seed=0):
    """Write 4 train and 2 val images in mmseg layout: a red and a green rectangle on black."""
    rng = np.random.default_rng(seed)
    for split, count in (('train', 4), ('val', 2)):
        os.makedirs(osp.join(root, 'img_dir', split))
        os.makedirs(osp.join(root, 'ann_dir', split))
        for i in range(count):
            label = np.zeros((size, size), np.uint8)
            for cls in (1, 2):
                y, x = rng.integers(0, size - 8, 2)
                h, w = rng.integers(6, 14, 2)
                label[y:y + h, x:x + w] = cls
            noise = rng.integers(0, 40, (size, size, 3))
            img = np.clip(PALETTE[label].astype(int) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(osp.join(root, 'img_dir', split, f'{i}.png'))
            Image.fromarray(label).save(osp.join(root, 'ann_dir', split, f'{i}.png'))


@pytest.fixture(scope='session')
def make_tiny_dataset():
    """``write_tiny_dataset`` for tests that spoil their own copy of the data."""
    return write_tiny_dataset


@pytest.fixture(scope='session')
def workspace(tmp_path_factory):
    """Working directory of the runs: holds data/tiny_seg, the config's (relative) data_root."""
    root = tmp_path_factory.mktemp('tiny_seg')
    write_tiny_dataset(str(root / 'data' / 'tiny_seg'))
    return root


def clean_env(**extra):
    """The environment of a run: no GPU, one thread (runs repeat bit for bit), no activated venv,
    so the shell scripts find the repository's .venv as a user's shell would."""
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHON', 'PORT')}
    env.update(CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1', **extra)
    return env


@pytest.fixture(scope='session')
def tiny_config():
    """Path of the tiny SyncBN UNet config."""
    return CONFIG


@pytest.fixture(scope='session')
def run(workspace):
    """``run(cmd, cwd=workspace, **env)``: the completed process, stderr merged into ``.stdout``."""

    def run_(cmd, cwd=workspace, timeout=300, **env):
        return subprocess.run(cmd, cwd=cwd, env=clean_env(**env), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)

    return run_


@pytest.fixture(scope='session')
def train(run):
    """``train(work_dir, *args)``: tools/train.py on the tiny config with ``--seed 2023``."""

    def train_(work_dir, *args):
        return run([sys.executable, osp.join(REPO, 'tools', 'train.py'), CONFIG, '--work-dir',
                    str(work_dir), '--seed', '2023', *args])

    return train_


@pytest.fixture(scope='session')
def full_run(train, workspace):
    """(work dir, output) of an uninterrupted 4-iteration run, checkpoints at iterations 2 and 4."""
    work_dir = workspace / 'full'
    proc = train(work_dir)
    assert proc.returncode == 0, proc.stdout
    return work_dir, proc.stdout
