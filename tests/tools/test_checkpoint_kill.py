"""A job killed while it saves a checkpoint never loses the previous one (max_keep_ckpts=1)."""
import collections
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

HERE = osp.dirname(osp.abspath(__file__))


@pytest.mark.slow  # a few minutes on the loaded 2-core CPU: two forked runs per operation
def test_kill_at_every_checkpoint_file_operation_loses_nothing(tiny_config, workspace):
    out = workspace / 'kill_during_save.json'
    proc = subprocess.run(
        [sys.executable, osp.join(HERE, 'kill_during_save.py'), tiny_config, str(workspace),
         str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-5000:]
    result = json.loads(out.read_text())
    ops = collections.Counter(op for op, _ in result['trace'])
    # The kills landed while checkpoints were written, renamed and deleted, many times.
    assert ops['open'] >= 4 and ops['replace'] >= 4 and ops['remove'] >= 1, ops
    assert result['problems'] == [], '\n'.join(result['problems'])
