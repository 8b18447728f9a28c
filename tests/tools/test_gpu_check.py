"""tools/gpu_check.sh --dry-run on the CPU: the GPU check's install, build, imports, GPU test
collection and benchmark steps, with only the GPU machine's base packages and the carried wheels
importable (tools/gpu_env.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / 'tools' / 'gpu_check.sh'
STEPS = ['environment', 'wheels', 'install', 'build', 'imports', 'gpu tests', 'benchmark large',
         'benchmark small']


def run(cmd, timeout, **env):
    full_env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES='',
                    OMP_NUM_THREADS='1', **env)
    full_env.pop('VIRTUAL_ENV', None)
    return subprocess.run(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def wheel_cache():
    """Where the test keeps the wheels it downloads: install.sh's cache, not the checkout."""
    cache = os.environ.get('VITSPLIT_CACHE') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'mmseg-vitsplit')
    return Path(cache) / 'gpu_wheels'


@pytest.fixture(scope='module')
def wheels():
    """The checkout's .whl/ when complete (checked offline, left as it is); else a copy in
    install.sh's cache, downloaded there by tools/gpu_wheels.sh: a test run writes nothing into
    the checkout."""
    if run(['bash', 'tools/gpu_wheels.sh', '--check'], 120).returncode == 0:
        return REPO / '.whl'
    cache = wheel_cache()
    if run(['bash', 'tools/gpu_wheels.sh', '--check', str(cache)], 120).returncode != 0:
        proc = run(['bash', 'tools/gpu_wheels.sh', str(cache)], 600)
        if proc.returncode != 0:
            pytest.skip('tools/gpu_wheels.sh could not fetch the wheels (PyPI unreachable?): '
                        + proc.stdout.strip().splitlines()[-1])
    return cache


@pytest.mark.slow
def test_dry_run_passes_every_step(wheels, tmp_path):
    out = tmp_path / 'out'
    proc = run(['bash', str(CHECK), '--dry-run'], 1500, OUT=str(out),
               GPU_CHECK_WORK=str(tmp_path / 'work'), GPU_CHECK_WHEELS=str(wheels))
    assert proc.returncode == 0, proc.stdout
    assert 'all steps passed' in proc.stdout
    steps = json.loads((out / 'steps.json').read_text())
    assert steps['dry_run'] is True
    assert [s['step'] for s in steps['steps']] == STEPS
    assert all(s['status'] == ('skipped' if s['step'] == 'benchmark large' else 'ok')
               for s in steps['steps']), steps
    env = json.loads((out / 'environment.json').read_text())
    assert env['dry_run'] and env['torch']
    # The GPU tests were collected (and so imported) with the carried packages alone.
    collected = (out / 'logs' / 'gpu_tests.log').read_text()
    for test in ('tests/gpu/test_gpu_inference.py::test_fast_inference_matches_fp32_eager[amp]',
                 'tests/gpu/test_gpu_ms_deform_attn.py::test_bf16_matches_float64_reference',
                 'tests/ops/test_ms_deform_attn.py::test_cuda_low_precision'):
        assert test in collected
    results = json.loads((out / 'benchmark_small.json').read_text())
    assert [Path(r['config']).name for r in results] == [
        'linear_dinov2_finetune_small_512_40k_ade20k.py',
        'linear_dinov2_vitsplit_small_512_20k_ade20k.py']
    for r in results:
        assert r['amp'] is True and r['batch'] == 2 and r['infer_batch'] == [2, 1]
        assert set(r['infer_img_s_by_batch']) == {'2', '1'}
        assert r['train_ms'] > 0 and r['train_gflop'] > 0 and r['slide_mmseg_ms'] > 0
        assert r['infer_img_s'] == r['infer_img_s_by_batch']['2']
    assert not (out / 'benchmark_large.json').exists()


def test_stops_at_the_first_failing_step_and_names_it(tmp_path):
    out = tmp_path / 'out'
    empty = tmp_path / 'no_wheels'
    empty.mkdir()
    proc = run(['bash', str(CHECK), '--dry-run'], 300, OUT=str(out),
               GPU_CHECK_WORK=str(tmp_path / 'work'), GPU_CHECK_WHEELS=str(empty))
    assert proc.returncode == 1, proc.stdout
    assert 'FAILED at step: wheels' in proc.stdout
    assert 'mmsegmentation==1.2.2' in proc.stdout  # what is missing
    assert '[gpu_check] install' not in proc.stdout  # nothing after the failing step ran
    steps = json.loads((out / 'steps.json').read_text())['steps']
    assert [(s['step'], s['status']) for s in steps] == [('environment', 'ok'),
                                                         ('wheels', 'failed')]


def test_rejects_unknown_arguments():
    proc = run(['bash', str(CHECK), '--dryrun'], 30)
    assert proc.returncode == 2 and "unknown argument '--dryrun'" in proc.stdout
