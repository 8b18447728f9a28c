"""keep_freed_memory: freed activations stay mapped; the next step does not fault them back in."""
import os.path as osp
import platform
import subprocess
import sys

import pytest

# Runs in a child process: mallopt changes the whole process, not only one test.
FAULTS_PER_STEP = """
import importlib.util, resource, sys
import numpy as np
spec = importlib.util.spec_from_file_location('malloc', sys.argv[2])  # not the whole package
malloc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(malloc)
if sys.argv[1] == 'keep':
    assert malloc.keep_freed_memory() is True
def step():  # allocate and free 240 MiB in 6 MiB blocks, as a step does with its activations
    blocks = [np.ones(6 * 2**20 // 8) for _ in range(40)]
    del blocks
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


MODULE = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'mmseg_custom',
                  'utils', 'malloc.py')


def faults_per_step(mode):
    out = subprocess.run([sys.executable, '-c', FAULTS_PER_STEP, mode, MODULE],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc-specific')
def test_keep_freed_memory_stops_page_faults():
    default, kept = faults_per_step('default'), faults_per_step('keep')
    # By default glibc hands the freed blocks back to the kernel and the next step faults them
    # in again (about 20000 faults on a 4 KiB-page machine, measured; fewer with larger pages or
    # transparent huge pages, but at least one per block); kept, the step reuses mapped memory.
    # Relative to the default count, so page size and huge pages do not decide the outcome.
    assert default >= 40, default
    assert kept * 10 <= default, (default, kept)
