"""The embedded demo end to end (short run) and tools/image_demo.py on its checkpoint."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'tools', 'demo.py')


def _load_demo_module():
    spec = importlib.util.spec_from_file_location('demo_tool', DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_schedule():
    demo = _load_demo_module()
    cfg = Config.fromfile(demo.DEFAULT_CONFIG)
    full = cfg.train_cfg.max_iters
    demo.scale_schedule(cfg, full // 5)
    assert cfg.train_cfg.max_iters == full // 5
    (sched, ) = cfg.param_scheduler
    warmup = Config.fromfile(demo.DEFAULT_CONFIG).param_scheduler[0].warmup_iters
    assert sched.begin == 0 and sched.end == full // 5
    assert sched.warmup_iters == round(warmup / 5) > 0
    assert cfg.default_hooks.checkpoint.interval == full // 5
    assert 0 < cfg.train_cfg.val_interval <= full // 5


def test_read_scalars(tmp_path):
    demo = _load_demo_module()
    path = tmp_path / 'scalars.json'
    path.write_text('\n'.join(json.dumps(r) for r in [
        dict(aAcc=50.0, mIoU=10.0, mAcc=20.0, step=0),
        dict(lr=1e-3, loss=1.5, decode_head_loss_ce=1.5, iter=10, step=10),
        dict(lr=1e-3, loss=0.5, decode_head_loss_ce=0.5, iter=20, step=20),
        dict(aAcc=90.0, mIoU=80.0, mAcc=85.0, step=20)]) + '\n')
    loss, miou = demo.read_scalars(str(path))
    assert loss == [(10, 1.5), (20, 0.5)]
    assert miou == [(0, 10.0), (20, 80.0)]


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    work_dir, data_root = root / 'work', root / 'data'
    cmd = [sys.executable, DEMO, '--work-dir', str(work_dir), '--data-root', str(data_root),
           '--iters', '400', '--num-train', '600', '--num-val', '40', '--num-overlays', '2']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(work_dir / 'summary.json') as f:
        return dict(summary=json.load(f), stdout=proc.stdout + proc.stderr, root=root)


@pytest.mark.slow
def test_demo_learns(demo_run):
    summary = demo_run['summary']
    # A short run is far from the full demo's accuracy, but far above the untrained model
    # (about 5% mIoU: it labels nearly everything as one class).
    assert summary['mIoU'] > summary['mIoU_before'] + 15, summary
    assert len(summary['val_mIoU']) >= 3 and summary['loss']
    assert summary['loss'][-1][1] < summary['loss'][0][1]
    assert 'per class results' in demo_run['stdout']
    assert 'Demo finished' in demo_run['stdout']


@pytest.mark.slow
def test_demo_writes_figures(demo_run):
    import cv2

    summary = demo_run['summary']
    assert len(summary['overlays']) == 2
    for path in summary['overlays'] + [summary['curves']]:
        image = cv2.imread(path)
        assert image is not None and image.shape[0] > 100 and image.std() > 10, path
    assert osp.isfile(summary['checkpoint']) and osp.isfile(summary['config'])


@pytest.mark.slow
def test_image_demo_on_demo_checkpoint(demo_run):
    import cv2

    summary = demo_run['summary']
    image = osp.join(demo_run['root'], 'data', 'img_dir', 'val', '00001.png')
    out = osp.join(demo_run['root'], 'overlay.png')
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'image_demo.py'), summary['config'],
         summary['checkpoint'], image, '--out', out, '--device', 'cpu'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    overlay = cv2.imread(out)
    assert overlay is not None and overlay.shape[:2] == cv2.imread(image).shape[:2]
