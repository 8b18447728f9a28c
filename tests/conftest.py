import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Golden data shipped with the tests (tests/data/README.md says where it comes from).
FIXTURES = osp.join(REPO, 'tests', 'data')


@pytest.fixture
def fixtures_dir():
    return FIXTURES


@pytest.fixture
def repo_dir():
    return REPO
