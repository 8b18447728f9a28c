import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Golden files shipped beside the repository (read-only); tests that need them skip without them.
FIXTURES = osp.join(osp.dirname(REPO), 'shared', 'fixtures')


@pytest.fixture
def fixtures_dir():
    if not osp.isdir(FIXTURES):
        pytest.skip(f'golden fixtures not found at {FIXTURES}')
    return FIXTURES


@pytest.fixture
def repo_dir():
    return REPO
