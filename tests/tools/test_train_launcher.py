"""tools/train.py, tools/test.py and tools/image_demo.py on CPU: resume, checkpoints, SyncBN
fallback, evaluation, checkpoints that do not fit, --amp."""
import glob
import importlib.util
import json
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

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


def test_resume_with_another_class_count_stops_before_any_work(full_run, train, workspace):
    """The checkpoint has 3 classes, the config 4: one error with both shapes, no training."""
    proc = train(workspace / 'four_classes', '--resume', str(full_run[0] / 'iter_2.pth'),
                 '--cfg-options', 'model.decode_head.num_classes=4')
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert 'does not fit the model built from the config' in proc.stdout, proc.stdout[-3000:]
    assert ('size mismatch for decode_head.conv_seg.weight: copying a param with shape '
            'torch.Size([3, 4, 1, 1]) from checkpoint, the shape in current model is '
            'torch.Size([4, 4, 1, 1])') in proc.stdout
    assert 'Advance dataloader' not in proc.stdout and 'Traceback' not in proc.stdout


def test_test_py_refuses_a_checkpoint_that_does_not_fit(full_run, run, tiny_config, workspace):
    proc = run([sys.executable, osp.join(REPO, 'tools', 'test.py'), tiny_config,
                str(full_run[0] / 'iter_4.pth'), '--work-dir', str(workspace / 'test_misfit'),
                '--cfg-options', 'model.decode_head.num_classes=4'])
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert f'Checkpoint {full_run[0] / "iter_4.pth"} does not fit the model' in proc.stdout
    assert 'torch.Size([3, 4, 1, 1])' in proc.stdout and 'torch.Size([4, 4, 1, 1])' in proc.stdout
    assert 'Iter(test)' not in proc.stdout and 'aAcc' not in proc.stdout  # nothing evaluated


def load_tool(name):
    """tools/NAME.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f'tool_{name}', osp.join(REPO, 'tools',
                                                                           f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_demo_refuses_a_checkpoint_that_does_not_fit(full_run, tiny_config, workspace,
                                                            tmp_path, monkeypatch):
    monkeypatch.chdir(workspace)
    image_demo = load_tool('image_demo')
    image = str(workspace / 'data' / 'tiny_seg' / 'img_dir' / 'val' / '0.png')
    ckpt = str(full_run[0] / 'iter_4.pth')
    three = tmp_path / 'three_classes.py'  # the tiny config, with mmseg's inference pipeline
    three.write_text(f'_base_ = [{tiny_config!r}]\ntest_pipeline = '
                     "[dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]\n")
    image_demo.main([str(three), ckpt, image, '--out', str(tmp_path / 'ok.png'), '--device',
                     'cpu'])
    assert (tmp_path / 'ok.png').is_file()  # the checkpoint of its own config works

    four = tmp_path / 'four_classes.py'
    four.write_text(f'_base_ = [{str(three)!r}]\nmodel = dict(decode_head=dict(num_classes=4))\n')
    with pytest.raises(SystemExit) as info:
        image_demo.main([str(four), ckpt, image, '--out', str(tmp_path / 'bad.png'),
                         '--device', 'cpu'])
    message = str(info.value.code)
    assert f'Checkpoint {ckpt} does not fit the model' in message
    assert 'torch.Size([3, 4, 1, 1])' in message and 'torch.Size([4, 4, 1, 1])' in message
    assert not (tmp_path / 'bad.png').exists()


@pytest.mark.parametrize('bf16', [True, False])
def test_amp_is_bf16_or_fp16_with_loss_scaling(bf16, monkeypatch):
    train_py = load_tool('train')
    logged = []
    monkeypatch.setattr(train_py, 'print_log', lambda msg, **kwargs: logged.append(msg))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'Tesla T4')
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=1))))
    train_py.enable_amp(cfg)
    if bf16:
        assert cfg.optim_wrapper.type == 'BF16OptimWrapper'
        assert logged == ['--amp: bf16 autocast (BF16OptimWrapper), no loss scaling.']
    else:
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.dtype == 'float16' and cfg.optim_wrapper.loss_scale == 'dynamic'
        assert logged == ['--amp: fp16 autocast with dynamic loss scaling (AmpOptimWrapper): '
                          'Tesla T4 has no bf16.']
