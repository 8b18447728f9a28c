"""dist_train.sh, dist_test.sh and slurm_train.sh: run, sourced or not, without a GPU."""
import os
import os.path as osp
import socket
import shutil
import stat

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIST_TRAIN = osp.join(REPO, 'dist_train.sh')
DIST_TEST = osp.join(REPO, 'dist_test.sh')
SLURM_TRAIN = osp.join(REPO, 'slurm_train.sh')


def test_dist_train_runs_two_gloo_processes(run, tiny_config, workspace):
    work_dir = workspace / 'dist'
    proc = run(['bash', DIST_TRAIN, tiny_config, '2', '--seed', '2023', '--work-dir', str(work_dir),
                '--cfg-options', 'train_cfg.max_iters=2'])
    assert proc.returncode == 0, proc.stdout
    assert 'Total batch size: 4 = 2 processes x 2 images per process' in proc.stdout
    assert 'mIoU' in proc.stdout  # validation at the last iteration, results gathered over gloo
    assert osp.isfile(work_dir / 'iter_2.pth')


def test_sourced_dist_test_runs_and_returns(full_run, run, tiny_config, workspace):
    # As the ViT-Split README writes it: a variable assignment, then the script sourced.
    script = (f'CUDA_VISIBLE_DEVICES= . {DIST_TEST} {tiny_config} {full_run[0] / "iter_4.pth"} 1 '
              f'--work-dir {workspace / "dist_test"}; echo "returned $?"')
    proc = run(['bash', '-c', script])
    assert 'mIoU' in proc.stdout and 'returned 0' in proc.stdout, proc.stdout


def test_sourced_dist_train_with_bad_config_does_not_exit_the_shell(run):
    proc = run(['bash', '-c', '. ./dist_train.sh missing.py 1; echo "still-alive $?"'], cwd=REPO)
    assert 'config missing.py not found' in proc.stdout
    assert 'still-alive 2' in proc.stdout


def test_dist_train_rejects_a_bad_process_count(run, tiny_config):
    proc = run(['bash', DIST_TRAIN, tiny_config, 'four'])
    assert proc.returncode == 2
    assert "GPUS must be a positive number of processes, got 'four'" in proc.stdout


def test_slurm_train_builds_the_srun_command(run, tiny_config, tmp_path):
    fake_srun = tmp_path / 'srun'
    fake_srun.write_text('#!/usr/bin/env bash\necho "srun $*"\n')
    fake_srun.chmod(fake_srun.stat().st_mode | stat.S_IEXEC)
    # The interpreter is given: which one is picked by default is the next test's subject, and
    # depends on whether this checkout has a .venv.
    proc = run(['bash', SLURM_TRAIN, 'gpu', 'vitsplit', tiny_config, '2', '--seed', '2023'],
               PATH=f'{tmp_path}:{os.environ["PATH"]}', SRUN_ARGS='--quotatype=auto',
               PYTHON='/opt/py3')
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.strip() == (
        f'srun -p gpu --job-name=vitsplit --gres=gpu:2 --ntasks=2 --ntasks-per-node=2 '
        f'--cpus-per-task=5 --kill-on-bad-exit=1 --quotatype=auto /opt/py3 -u '
        f'{REPO}/tools/train.py {tiny_config} --launcher slurm --seed 2023')


def test_launchers_pick_the_interpreter(run, tiny_config, tmp_path):
    fake_srun = tmp_path / 'srun'
    fake_srun.write_text('#!/usr/bin/env bash\necho "srun $*"\n')
    fake_srun.chmod(fake_srun.stat().st_mode | stat.S_IEXEC)
    path = f'{tmp_path}:{os.environ["PATH"]}'
    cmd = ['bash', SLURM_TRAIN, 'gpu', 'vitsplit', tiny_config, '1']
    assert ' /opt/py3 -u ' in run(cmd, PATH=path, PYTHON='/opt/py3').stdout
    # An activated virtualenv wins over the repository's .venv.
    assert ' python -u ' in run(cmd, PATH=path, VIRTUAL_ENV=str(tmp_path)).stdout
    # Sourced with a PYTHON that is not exported.
    proc = run(['bash', '-c', f'PYTHON=/opt/py4; . {SLURM_TRAIN} gpu vitsplit {tiny_config} 1'],
               PATH=path)
    assert ' /opt/py4 -u ' in proc.stdout


def test_a_busy_port_says_to_change_port(run, tiny_config):
    with socket.create_server(('', 0)) as busy:
        port = busy.getsockname()[1]
        proc = run(['bash', DIST_TRAIN, tiny_config, '2'], PORT=str(port))
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert proc.stdout.startswith(f'Port {port} is already in use'), proc.stdout[-3000:]
    assert f'Set PORT to a free port, e.g. PORT={port + 1}' in proc.stdout


@pytest.mark.parametrize('venv', [True, False], ids=['with .venv', 'without .venv'])
def test_launcher_python_prefers_the_checkouts_venv(run, tmp_path, venv):
    """tools/launcher_python.sh in a copy of the repository, with or without its .venv."""
    tools = tmp_path / 'repo' / 'tools'
    tools.mkdir(parents=True)
    shutil.copy(osp.join(REPO, 'tools', 'launcher_python.sh'), tools)
    python = tmp_path / 'repo' / '.venv' / 'bin' / 'python'
    if venv:
        python.parent.mkdir(parents=True)
        python.write_text('#!/bin/sh\n')
        python.chmod(0o755)
    proc = run(['bash', str(tools / 'launcher_python.sh')])
    assert proc.stdout.strip() == (str(python) if venv else 'python')
