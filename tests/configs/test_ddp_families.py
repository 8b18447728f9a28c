"""Every model family trains under 2-process DDP (gloo, CPU): ViT-Split, gate, frozen trunk,
fine-tuning, Mask2Former, Rein, LoRA."""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
from ddp_families import FAMILIES

from mmseg_custom.datasets.synthetic_shapes import generate_dataset

SCRIPT = osp.join(osp.dirname(osp.abspath(__file__)), 'ddp_families.py')


@pytest.mark.slow  # ~2 min on the loaded 2-core CPU: seven runners in two processes
def test_every_family_trains_two_iterations_in_ddp(tmp_path):
    data_root = str(tmp_path / 'shapes')
    generate_dataset(data_root, num_train=4, num_val=1, size=56, verbose=False)
    with socket.create_server(('', 0)) as s:
        port = s.getsockname()[1]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={port}', SCRIPT, data_root, str(tmp_path / 'work')],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    for family in FAMILIES:
        assert f'{family}: trained 2 iterations in 2 processes' in proc.stdout, proc.stdout[-6000:]
