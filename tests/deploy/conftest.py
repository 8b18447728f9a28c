"""Fixtures of the export tests: shipped configs at toy width (tests/configs/tiny_models.py)."""
import importlib.util
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='session')
def tiny_models():
    """tests/configs/tiny_models.py as a module (tests/configs is not a package)."""
    spec = importlib.util.spec_from_file_location(
        'deploy_tiny_models', osp.join(REPO, 'tests', 'configs', 'tiny_models.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
