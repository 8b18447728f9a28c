"""tools/train.py and tools/test.py on CPU: resume, checkpoints, SyncBN fallback, evaluation."""
import glob
import json
import os.path as osp
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def logged_scalars(work_dir):
    """Training scalars per iteration of the latest run in ``work_dir``: {iter: {name: value}}."""
    runs = sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json')))
    assert runs, f'no scalars.json under {work_dir}'
    with open(runs[-1]) as f:
        records = [json.loads(line) for line in f]
    return {r['iter']: r for r in records if 'loss' in r}


def test_train_logs_batch_and_replaces_sync_bn_once(full_run):
    work_dir, out = full_run
    assert 'Total batch size: 2 = 1 process x 2 images per process' in out
    # One line from us; none of mmengine's generic "SyncBatchNorm (SyncBN) ... reverted" lines.
    assert out.count('SyncBN layers by BN') == 1, out
    assert 'SyncBatchNorm (SyncBN)' not in out
    assert sorted(osp.basename(p) for p in glob.glob(str(work_dir / 'iter_*'))) == [
        'iter_2.pth', 'iter_4.pth']  # and no temporary files of the atomic writes
    assert sorted(logged_scalars(work_dir)) == [1, 2, 3, 4]


def test_resume_continues_like_an_uninterrupted_run(full_run, train, workspace):
    work_dir = workspace / 'interrupted'
    # --resume in an empty work dir: one line, then a fresh start; stop after 2 of 4 iterations.
    first = train(work_dir, '--resume', '--cfg-options', 'train_cfg.max_iters=2')
    assert first.returncode == 0, first.stdout
    assert first.stdout.count('Resume: no checkpoint in') == 1
    assert 'checkpoint None' not in first.stdout
    head = logged_scalars(work_dir)
    second = train(work_dir, '--resume')
    assert second.returncode == 0, second.stdout
    assert 'Resuming from' in second.stdout and 'iter_2.pth' in second.stdout
    tail = logged_scalars(work_dir)
    assert sorted(head) == [1, 2] and sorted(tail) == [3, 4]

    expected = logged_scalars(full_run[0])
    for it, record in {**head, **tail}.items():
        for key in ('loss', 'lr', 'decode.acc_seg'):
            assert record[key] == pytest.approx(expected[it][key], rel=1e-6, abs=1e-6), (it, key)


def test_resume_from_truncated_checkpoint_fails_naming_it(train, workspace, tmp_path):
    ckpt = tmp_path / 'iter_2.pth'
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:2000])
    proc = train(workspace / 'truncated', '--resume', str(ckpt))
    assert proc.returncode != 0
    assert f'Checkpoint {ckpt} is corrupt or truncated' in proc.stdout, proc.stdout[-3000:]


def test_test_py_evaluates_and_writes_predictions(full_run, run, tiny_config, workspace):
    out_dir, show_dir = workspace / 'preds', 'painted'
    proc = run([sys.executable, osp.join(REPO, 'tools', 'test.py'), tiny_config,
                str(full_run[0] / 'iter_4.pth'), '--work-dir', str(workspace / 'test'),
                '--out', str(out_dir), '--show-dir', show_dir])
    assert proc.returncode == 0, proc.stdout
    assert 'mIoU' in proc.stdout
    assert len(glob.glob(str(out_dir / '*.png'))) == 2
    assert len(glob.glob(str(workspace / show_dir / '**' / '*.png'), recursive=True)) == 2
