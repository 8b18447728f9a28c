"""tools/compare.py: a 2x2 matrix on tiny shapes data, failed cells, reruns, dry runs, reading."""
import glob
import importlib.util
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

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
                        lambda cfg: {'model.backbone.out_indices': [99]})
    argv = ['--trunks', 'dinov2_tiny', 'dinov2_tiny_random', '--methods', 'linear', 'vitsplit',
            '--iters', '2', '--work-dir', work, '--cfg-options', *tiny_options(data)]
    results = compare.main(argv)
    table = json.load(open(osp.join(work, 'results.json')))
    broken = compare.main(argv[:3] + ['--methods', 'broken'] + argv[6:])
    out = capsys.readouterr().out

    assert len(results) == 4 and all(r['status'] == 'ok' for r in results), results
    by_key = {(r['trunk'], r['method']): r for r in results}
    for r in results:
        assert r['iters'] == 2 and r['train_seconds'] > 0
        # the table's mIoU is the one the cell's own validation logged (mmengine's scalars.json)
        logs = sorted(glob.glob(osp.join(work, '*', r['trunk'], r['method'], '*', '*',
                                         'vis_data', 'scalars.json')))
        logged = [json.loads(line) for line in open(logs[-1])]
        assert r['mIoU'] == pytest.approx([x['mIoU'] for x in logged if 'mIoU' in x][-1],
                                          abs=0.01)
        # memory above the idle process, in MiB: a tiny model's step needs some, not the RSS
        assert 0 < r['peak_mib'] < 512
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


# ---------------------------------------------------------------- bad input, refused or skipped

BAD_RESULTS = {'random bytes': bytes(range(256)) * 4, 'a list': b'[1, 2]',
               'no key': b'{"status": "ok"}',
               'another cell': json.dumps(dict(dataset='shapes', trunk='dinov2_tiny',
                                               method='finetune', seed=0, status='ok',
                                               mIoU=1.0)).encode()}


def write_cell(directory, key, result=None):
    os.makedirs(directory, exist_ok=True)
    with open(osp.join(directory, 'cell.json'), 'w') as f:
        json.dump(key, f)
    if result is not None:
        with open(osp.join(directory, 'result.json'), 'wb') as f:
            f.write(result)


@pytest.mark.parametrize('bad', BAD_RESULTS)
def test_a_bad_result_file_is_named_and_its_cell_run_again(compare, tmp_path, monkeypatch,
                                                            capsys, bad):
    """Each of these aborted the whole run (or broke the table later)."""
    work = str(tmp_path / 'work')
    key = dict(dataset='shapes', trunk='dinov2_tiny', method='linear', seed=0)
    directory = compare.cell_dir(work, **key)
    write_cell(directory, key, BAD_RESULTS[bad])
    ran = []

    def run_one(key, directory, verbose, prepare=None):
        ran.append(directory)
        return dict(key, status='ok', mIoU=50.0, trainable=10, train_seconds=1.0, peak_mib=1.0)

    monkeypatch.setattr(compare, 'run_one', run_one)
    results = compare.main(['--methods', 'linear', '--iters', '1', '--work-dir', work])
    err = capsys.readouterr().err
    assert ran == [directory] and results[0]['mIoU'] == 50.0
    assert f'ignoring {osp.join(directory, "result.json")}: it ' in err, err


def test_collect_names_and_skips_bad_files_and_reads_the_rest(compare, tmp_path, capsys):
    work = tmp_path / 'work'
    good = dict(dataset='ade20k', trunk='dinov2_s', method='vitsplit', seed=0)
    write_cell(str(work / 'good'), good, json.dumps(dict(good, status='ok', mIoU=40.0)).encode())
    for i, content in enumerate(BAD_RESULTS.values()):
        write_cell(str(work / f'bad{i}'), dict(good, seed=i + 1), content)
    write_cell(str(work / 'badkey'), [1, 2])
    compare.main(['--collect', str(work)])
    out, err = capsys.readouterr()
    for i in range(len(BAD_RESULTS)):
        assert f'ignoring {work / f"bad{i}" / "result.json"}: it ' in err, err
    assert f'{work / "badkey" / "cell.json"} holds a JSON list' in err
    # the good seed is the row's value; the others, with no logs, are pending
    rows = json.loads((work / 'results.json').read_text())['rows']
    assert [(r['mIoU'], r['seeds'], r['runs']) for r in rows] == [(40.0, 1, 1)]


def test_collect_of_a_missing_folder_refuses_and_creates_nothing(compare, tmp_path, capsys):
    missing = tmp_path / 'typo'
    with pytest.raises(SystemExit):
        compare.main(['--collect', str(missing)])
    assert f'--collect {missing}: no such folder' in capsys.readouterr().err
    assert not missing.exists()


@pytest.mark.parametrize('argv, message', [
    (['--seeds', '0', '0'], 'seed(s) [0] given more than once'),
    (['--seeds', '1', '2', '1'], 'seed(s) [1] given more than once'),
    (['--iters', '0'], 'argument --iters: 0 is not a positive number'),
    (['--iters', '-5'], 'argument --iters: -5 is not a positive number'),
    (['--trunks', 'dinov2_tnyi'], "unknown trunk(s) ['dinov2_tnyi']"),
    (['--datasets', 'ade20k', 'cityscapes', '--trunks', 'dinov2_s', 'dinov2_bb'],
     "unknown trunk(s) ['dinov2_bb']: no dataset of --datasets has them. Trunks: ade20k: "
     'dinov2_s dinov2_b dinov2_l; cityscapes: dinov2_s dinov2_b dinov2_l'),
])
def test_bad_arguments_are_refused_before_any_work(compare, capsys, argv, message):
    """--seeds 0 0 trained one cell twice as 2 seeds, --iters 0 failed every cell, and a trunk
    typo among several datasets was dropped silently."""
    with pytest.raises(SystemExit) as exit_:
        compare.parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_trunk_of_some_datasets_only_is_skipped_where_missing(compare, capsys):
    args = compare.parse_args(['--datasets', 'ade20k', 'pascal_context', '--trunks', 'dinov2_s',
                               '--methods', 'vitsplit'])
    assert [c[:2] for c in compare.plan(args)] == [('ade20k', 'dinov2_s')]
    assert "dataset pascal_context has no trunk(s) ['dinov2_s']" in capsys.readouterr().err


def test_the_plot_is_announced_only_when_written(compare, tmp_path, capsys):
    failed = dict(dataset='shapes', trunk='t', method='linear', seed=0, status='failed',
                  error='exit 1: boom')
    compare.report([failed], str(tmp_path))
    out = capsys.readouterr().out
    assert f'plot: {tmp_path / "results.png"}' not in out and '; no plot (no row has' in out
    assert not (tmp_path / 'results.png').exists()
    compare.report([dict(failed, status='ok', mIoU=50.0, train_seconds=2.0, error=None)],
                   str(tmp_path))
    assert f'plot: {tmp_path / "results.png"}' in capsys.readouterr().out
    assert (tmp_path / 'results.png').stat().st_size > 0


# ---------------------------------------------------------------- the cell's process and lock

# A parent running one cell whose process writes its PID and sleeps.
# Ctrl-C as in a terminal: a test run started in the background (`cmd &` without job control)
# hands its children SIGINT ignored, and Python then keeps it ignored.
PARENT = """
import importlib.util, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
spec = importlib.util.spec_from_file_location('compare', sys.argv[1])
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)
child = "import os, sys, time; open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid())); " \\
        "os.replace(sys.argv[1] + '.tmp', sys.argv[1]); time.sleep(300)"
compare.cell_command = lambda d: [sys.executable, '-c', child, d + '/child.pid']
compare.run_one(dict(dataset='d', trunk='t', method='m', seed=0), sys.argv[2], False)
"""
KEY = dict(dataset='d', trunk='t', method='m', seed=0)


def alive(pid):
    """Running (a zombie waiting for init to reap it counts as dead)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def wait_for(condition, seconds):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.fixture
def running_cell(tmp_path):
    """(parent process, its cell's child PID, cell folder); both killed at the end."""
    directory = tmp_path / 'cell'
    directory.mkdir()
    parent = subprocess.Popen([sys.executable, '-c', PARENT, osp.join(REPO, 'tools',
                                                                      'compare.py'),
                               str(directory)])
    pid_file = directory / 'child.pid'
    assert wait_for(pid_file.exists, 60), 'the cell process did not start'
    child = int(pid_file.read_text())
    yield parent, child, directory
    for pid in (parent.pid, child):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    parent.wait()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux')
@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_the_cell_process_dies_with_the_parent(running_cell, sig):
    """Killing compare.py left the cell training on (PPID 1) beside a re-run."""
    parent, child, _ = running_cell
    os.kill(parent.pid, sig)
    parent.wait(30)
    assert wait_for(lambda: not alive(child), 20), f'cell process {child} outlived its parent'


def test_a_running_cell_is_not_started_again_and_a_dead_runs_lock_is_taken_over(
        compare, running_cell, monkeypatch, capsys):
    parent, child, directory = running_cell

    def must_not_start(*args):
        raise AssertionError('a second process was started for a running cell')

    monkeypatch.setattr(compare, 'run_child', must_not_start)
    row = compare.run_one(KEY, str(directory), False)
    assert row == dict(KEY, status='pending', error=f'running in process {parent.pid}')
    assert f'{directory} is being trained by process {parent.pid}' in capsys.readouterr().err

    os.kill(parent.pid, signal.SIGKILL)  # its lock file stays, with a dead PID
    parent.wait(30)
    assert wait_for(lambda: not alive(child), 20)
    assert (directory / 'cell.lock').read_text().strip() == str(parent.pid)
    monkeypatch.undo()
    done = json.dumps(dict(KEY, status='ok', mIoU=50.0))
    monkeypatch.setattr(compare, 'cell_command', lambda d: [
        sys.executable, '-c', f'open({d!r} + "/result.json", "w").write({done!r})'])
    assert compare.run_one(KEY, str(directory), False) == dict(KEY, status='ok', mIoU=50.0)


# ---------------------------------------------------------------- EoMT methods and --test-mode

def _trainable(model, prefix=''):
    return sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad and n.startswith(prefix))


def test_eomt_methods_are_built_from_the_row_s_vitsplit_config(compare, tmp_path, capsys):
    work = str(tmp_path / 'dry')
    compare.main(['--datasets', 'ade20k', '--methods', 'vitsplit', 'vitsplit_eomt', 'eomt',
                  'eomt_frozen', '--dry-run', '--work-dir', work])
    assert len([ln for ln in capsys.readouterr().out.splitlines()
                if ln.startswith('bash ')]) == 4
    ade_s = osp.join(work, 'ade20k', 'dinov2_s')
    cfgs = {m: Config.fromfile(osp.join(ade_s, m, 'seed0', 'config.py'))
            for m in ('vitsplit', 'vitsplit_eomt', 'eomt', 'eomt_frozen')}
    vitsplit = cfgs['vitsplit']
    max_iters = vitsplit.train_cfg.max_iters
    for method in ('vitsplit_eomt', 'eomt', 'eomt_frozen'):
        cfg = cfgs[method]
        assert cfg.model.type == 'EoMT', method
        assert cfg.model.backbone.trunk == vitsplit.model.backbone.trunk
        head = cfg.model.decode_head
        assert (head.type, head.num_classes, head.num_queries, head.num_blocks) == (
            'EoMTHead', 150, 100, 3)
        assert len(head.loss_cls.class_weight) == 151 and head.train_cfg.num_points == 12544
        assert 'mmseg_custom.models.eomt' in cfg.custom_imports.imports
        (anneal, ) = [h for h in cfg.custom_hooks if h.type == 'EoMTMaskAnnealingHook']
        assert anneal.start_iters == [round(max_iters * 6520 / 40000 * k) for k in (1, 2, 3)]
        assert anneal.end_iters == [round(max_iters * 6520 / 40000 * k) for k in (2, 3, 4)]
        assert 'SegLabelCheckHook' in [h.type for h in cfg.custom_hooks]
        assert cfg.model.test_cfg == vitsplit.model.test_cfg  # the config's own evaluation
    split = cfgs['vitsplit_eomt'].model.backbone
    assert (split.type, split.select_layers, split.out_indices) == (
        'ViTSplitEoMTEncoder', [9, 10, 11], [2, 5, 8, 11])
    assert cfgs['eomt_frozen'].model.backbone.out_indices == []
    assert cfgs['eomt'].model.backbone.type == 'EoMTEncoder'
    assert cfgs['eomt'].optim_wrapper.paramwise_cfg.custom_keys == {
        'backbone.trunk': {'lr_mult': 0.1}}
    assert (cfgs['vitsplit_eomt'].optim_wrapper.paramwise_cfg
            == vitsplit.optim_wrapper.paramwise_cfg)  # the copied blocks at the row's 0.1x

    models = {m: build_on_meta(cfg) for m, cfg in cfgs.items()}
    split, eomt, frozen = models['vitsplit_eomt'], models['eomt'], models['eomt_frozen']
    # ViT-Split-EoMT: task head + prior head + queries and heads; no trunk parameter
    assert _trainable(split, 'backbone.trunk.') == 0
    assert _trainable(split) == (_trainable(split, 'backbone.task_head.')
                                 + _trainable(split, 'backbone.prior_')
                                 + _trainable(split, 'decode_head.'))
    # the shipped ViT-Split-EoMT-S (timm's DINOv2-S/14 with registers: the same trainable parts)
    shipped = build_on_meta(Config.fromfile(osp.join(
        REPO, 'configs/ade20k/vitsplit_eomt/eomt_dinov2_vitsplit_small_512_40k_ade20k.py')))
    assert _trainable(split) == _trainable(shipped)
    assert 8.5e6 < _trainable(split) < 8.7e6  # docs/methods/eomt.md: 8.59M
    assert _trainable(frozen) == _trainable(split) - _trainable(split, 'backbone.prior_')
    # EoMT trains the trunk too (all of it but DINOv2's unused mask token), not a task head
    trunk = sum(p.numel() for p in eomt.backbone.trunk.parameters())
    assert _trainable(eomt) == trunk - 384 + _trainable(eomt, 'decode_head.')
    assert _trainable(eomt, 'decode_head.') == _trainable(split, 'decode_head.')


def test_annealing_windows_end_before_the_schedule_for_many_query_blocks(compare):
    """Rows with more task-head blocks than the official 4 fit their windows into its 81.5 %."""
    row = compare.BENCHMARKS['cityscapes']['dinov2_l']  # 10 task-head blocks
    cfg = compare.cell_config(row, 'vitsplit_eomt', 0, None, [])
    (anneal, ) = [h for h in cfg.custom_hooks if h.type == 'EoMTMaskAnnealingHook']
    max_iters = cfg.train_cfg.max_iters
    assert len(anneal.start_iters) == cfg.model.decode_head.num_blocks == 10
    assert max(anneal.end_iters) <= round(0.815 * max_iters)
    assert anneal.start_iters == sorted(anneal.start_iters)


def test_a_finished_cell_of_another_protocol_runs_again(compare, tmp_path, monkeypatch, capsys):
    row = compare.BENCHMARKS['shapes']['dinov2_tiny']
    cfg = compare.cell_config(row, 'vitsplit', 0, 4, [], 'windows')
    assert compare.protocol(cfg) == dict(iters=4, test_mode='windows')
    directory = compare.cell_dir(str(tmp_path), 'shapes', 'dinov2_tiny', 'vitsplit', 0)
    os.makedirs(directory)
    key = dict(dataset='shapes', trunk='dinov2_tiny', method='vitsplit', seed=0)
    compare._write_json(osp.join(directory, 'result.json'),
                        dict(key, status='ok', mIoU=50.0, iters=4, test_mode='whole'))
    ran = []
    monkeypatch.setattr(compare, 'run_one', lambda key, *a, **k: ran.append(key) or dict(
        key, status='failed', error='not run in this test'))
    argv = ['--methods', 'vitsplit', '--iters', '4', '--work-dir', str(tmp_path)]
    compare.run_matrix(compare.parse_args(argv + ['--test-mode', 'windows']))
    assert ran == [key]
    assert "was run with test_mode='whole' (now 'windows')" in capsys.readouterr().err
    ran.clear()
    compare.run_matrix(compare.parse_args(argv + ['--test-mode', 'whole']))
    assert ran == []  # the same protocol: kept


def test_test_mode_sets_every_cell_s_evaluation(compare):
    row = compare.BENCHMARKS['shapes']['dinov2_tiny']
    ade = compare.BENCHMARKS['ade20k']['dinov2_s']
    cfg = compare.cell_config(row, 'vitsplit', 0, None, [], 'windows')
    # the demo's plain EncoderDecoder becomes BatchedSlideEncoderDecoder: it has the windows mode
    assert cfg.model.type == 'BatchedSlideEncoderDecoder'
    assert cfg.model.test_cfg == dict(mode='windows', crop_size=(112, 112))
    cfg = compare.cell_config(row, 'eomt', 0, 4, [], 'windows')
    assert cfg.model.type == 'EoMT' and cfg.model.test_cfg.mode == 'windows'
    (anneal, ) = [h for h in cfg.custom_hooks if h.type == 'EoMTMaskAnnealingHook']
    assert max(anneal.end_iters) <= 4  # scaled with --iters after the merge
    cfg = compare.cell_config(row, 'linear', 0, None, [], 'slide')
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(112, 112), stride=(74, 74))
    cfg = compare.cell_config(ade, 'vitsplit', 0, None, [], 'slide')
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))
    cfg = compare.cell_config(ade, 'vitsplit_eomt', 0, None, [], 'whole')
    assert cfg.model.test_cfg == dict(mode='whole')
    assert compare.cell_config(ade, 'linear', 0, None, []).model.test_cfg.mode == 'slide'

    other = Config(dict(model=dict(type='Mask2FormerSegmentor', data_preprocessor=dict(
        size=(64, 64)), test_cfg=dict(mode='whole'))))
    with pytest.raises(ValueError, match='segmentor Mask2FormerSegmentor has no windows mode'):
        compare.set_test_mode(other, 'windows')


@pytest.mark.slow  # two cells, each a process importing mmseg (a minute or two on 2 cores)
def test_eomt_methods_train_on_shapes(compare, tmp_path, capsys):
    data = str(tmp_path / 'data')
    generate_dataset(data, num_train=4, num_val=2, verbose=False, workers=1)
    work = str(tmp_path / 'work')
    results = compare.main(['--methods', 'vitsplit_eomt', 'eomt', '--iters', '2',
                            '--test-mode', 'windows', '--work-dir', work, '--cfg-options',
                            *tiny_options(data)])
    assert [r['status'] for r in results] == ['ok', 'ok'], results
    by_method = {r['method']: r for r in results}
    for method, r in by_method.items():
        assert r['iters'] == 2 and 0 <= r['mIoU'] <= 100
        cfg = Config.fromfile(osp.join(work, 'shapes', 'dinov2_tiny', method, 'seed0',
                                       'config.py'))
        model = build_on_meta(cfg)
        assert r['trainable'] == _trainable(model)
        assert cfg.model.test_cfg == dict(mode='windows', crop_size=(112, 112))
    split = build_on_meta(Config.fromfile(osp.join(
        work, 'shapes', 'dinov2_tiny', 'vitsplit_eomt', 'seed0', 'config.py')))
    assert _trainable(split, 'backbone.trunk.') == 0
    assert by_method['vitsplit_eomt']['trainable'] < by_method['eomt']['trainable']
    assert '| shapes | dinov2_tiny | vitsplit_eomt |' in capsys.readouterr().out
