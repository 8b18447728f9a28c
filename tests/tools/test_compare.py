"""tools/compare.py: a 2x2 matrix on tiny shapes data, failed cells, reruns, dry runs, reading."""
import importlib.util
import json
import os.path as osp

import pytest
from mmengine.config import Config

from mmseg_custom.datasets import generate_dataset
from mmseg_custom.utils.params import build_on_meta

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture
def compare():
    spec = importlib.util.spec_from_file_location('compare', osp.join(REPO, 'tools', 'compare.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_options(root):
    return [f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', 'train_dataloader.batch_size=2',
            'val_dataloader.batch_size=2']


@pytest.mark.slow  # five cells, each a process importing mmseg (20 min on the loaded 2 cores)
def test_two_by_two_matrix_failed_cell_and_rerun(compare, tmp_path, monkeypatch, capsys):
    data = str(tmp_path / 'data')
    generate_dataset(data, num_train=4, num_val=2, verbose=False, workers=1)
    work = str(tmp_path / 'work')
    # a method whose config the trunk rejects: its cell must fail in its own process
    monkeypatch.setitem(compare.METHODS, 'broken',
                        lambda backbone: {'model.backbone.out_indices': [99]})
    argv = ['--trunks', 'dinov2_tiny', 'dinov2_tiny_random', '--methods', 'linear', 'vitsplit',
            '--iters', '2', '--work-dir', work, '--cfg-options', *tiny_options(data)]
    results = compare.main(argv)
    table = json.load(open(osp.join(work, 'results.json')))
    broken = compare.main(argv[:3] + ['--methods', 'broken'] + argv[6:])
    out = capsys.readouterr().out

    assert len(results) == 4 and all(r['status'] == 'ok' for r in results), results
    by_key = {(r['trunk'], r['method']): r for r in results}
    for r in results:
        assert 0 <= r['mIoU'] <= 100 and r['iters'] == 2 and r['train_seconds'] > 0
        assert r['peak_mib'] is not None
    # the linear probe trains the decode head only; ViT-Split also its task and prior heads
    head = by_key[('dinov2_tiny', 'linear')]['trainable']
    assert by_key[('dinov2_tiny', 'vitsplit')]['trainable'] > head > 0
    assert by_key[('dinov2_tiny_random', 'linear')]['trainable'] == head
    assert broken[0]['status'] == 'failed' and 'out_indices' in broken[0]['error']
    assert 'FAILED' in out and '| shapes | dinov2_tiny |' in out

    assert {(r['trunk'], r['method']) for r in table['rows']} >= set(by_key)
    assert osp.getsize(osp.join(work, 'results.png')) > 0

    # a rerun runs nothing that finished and gives the same table
    def must_not_run(*args):
        raise AssertionError(f'rerun trained a finished cell: {args}')

    monkeypatch.setattr(compare, 'run_one', must_not_run)
    again = compare.main(argv)
    assert sorted(map(json.dumps, again)) == sorted(map(json.dumps, results))
    # the reader collects the same cells from the work dir
    collected = compare.collect([work])
    assert len([r for r in collected if r['status'] == 'ok']) == 4


def test_dry_run_prints_a_launch_command_per_cell(compare, tmp_path, capsys):
    work = str(tmp_path / 'dry')
    compare.main(['--datasets', 'ade20k', 'cityscapes', 'pascal_context', '--trunks', 'dinov2_s',
                  'dinov2_b', 'dinov2_l', '--methods', 'linear', 'finetune', 'vitsplit',
                  '--seeds', '2023', '--dry-run', '--work-dir', work])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('bash ')]
    # 3 + 3 + 2 (dataset, trunk) pairs x 3 methods
    assert len(lines) == 24 and all(ln.startswith('bash dist_train.sh ') for ln in lines)
    ade_s = osp.join(work, 'ade20k', 'dinov2_s')
    assert (f'bash dist_train.sh {ade_s}/vitsplit/seed2023/config.py 4 --work-dir '
            f'{ade_s}/vitsplit/seed2023 --seed 2023') in lines

    # the written configs are the methods: ViT-Split-S has the README's count
    def trainable(method):
        model = build_on_meta(Config.fromfile(osp.join(ade_s, method, 'seed2023', 'config.py')))
        return (sum(p.numel() for p in model.parameters() if p.requires_grad),
                sum(p.numel() for p in model.decode_head.parameters()),
                sum(p.numel() for p in model.backbone.parameters()))

    vitsplit, linear, finetune = trainable('vitsplit'), trainable('linear'), trainable('finetune')
    assert vitsplit[0] == 10_230_330
    assert linear[0] == linear[1]  # the decode head alone
    ft_model = build_on_meta(Config.fromfile(osp.join(ade_s, 'finetune', 'seed2023', 'config.py')))
    # everything but DINOv2's mask_token, which no segmentation forward uses (frozen for DDP)
    assert [n for n, p in ft_model.named_parameters() if not p.requires_grad] == [
        'backbone.trunk.mask_token']
    assert finetune[0] == sum(p.numel() for p in ft_model.parameters()) - 384
    ft_cfg = Config.fromfile(osp.join(ade_s, 'finetune', 'seed2023', 'config.py'))
    assert ft_cfg.optim_wrapper.paramwise_cfg.custom_keys == {'backbone.trunk': {'lr_mult': 0.1}}

    compare.main(['--datasets', 'cityscapes', '--methods', 'vitsplit', '--dry-run', '--slurm',
                  'gpu', '--work-dir', work])
    slurm = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('bash ')]
    assert slurm == [f'bash slurm_train.sh gpu cityscapes-dinov2_s-vitsplit-s0 '
                     f'{work}/cityscapes/dinov2_s/vitsplit/seed0/config.py 8 --work-dir '
                     f'{work}/cityscapes/dinov2_s/vitsplit/seed0 --seed 0']


def test_collect_reads_finished_mmengine_work_dirs(compare, tmp_path, capsys):
    work = str(tmp_path / 'cluster')
    compare.main(['--datasets', 'ade20k', '--methods', 'linear', 'vitsplit', '--dry-run',
                  '--work-dir', work])
    # what mmengine's LocalVisBackend writes: train records every interval, then a val record
    cell = osp.join(work, 'ade20k', 'dinov2_s', 'vitsplit', 'seed0')
    run = osp.join(cell, '20261124_120000', 'vis_data')
    import os
    os.makedirs(run)
    with open(osp.join(run, 'scalars.json'), 'w') as f:
        for step, time in ((50, 0.5), (100, 0.7)):
            f.write(json.dumps(dict(lr=1e-4, loss=1.0, time=time, memory=900 + step,
                                    step=step)) + '\n')
        f.write(json.dumps(dict(aAcc=80.0, mIoU=51.6, mAcc=60.0, step=100)) + '\n')
    rows = compare.report(compare.collect([work]), work)
    out = capsys.readouterr().out
    vitsplit = next(r for r in rows if r['method'] == 'vitsplit')
    assert vitsplit['mIoU'] == 51.6 and vitsplit['peak_mib'] == 1000
    assert vitsplit['train_seconds'] == pytest.approx(60.0)  # mean 0.6 s x 100 iterations
    assert vitsplit['trainable'] == 10_230_330 and vitsplit['rank'] == 1
    linear = next(r for r in rows if r['method'] == 'linear')
    assert linear['mIoU'] is None and 'no training log' in linear['error']
    assert '| ade20k | dinov2_s | vitsplit | 51.6 |' in out
