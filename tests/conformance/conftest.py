import logging

import pytest
from mmengine.logging import MMLogger


@pytest.fixture(autouse=True)
def quiet_init_logs():
    """Building a model logs the initialisation of every parameter: a failing cell's report
    should show its checks, not hundreds of those lines."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)
