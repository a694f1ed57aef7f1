"""Test configuration: hypothesis profiles and the ``slow`` marker.

Slow (statistical, large-size) tests are skipped on edit loops and run when ``CI`` is set
in the environment (as CI does) or with ``--runslow``; the command is the same ``pytest``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def _run_slow(config) -> bool:
    return config.getoption("--runslow") or os.environ.get("CI", "").lower() in ("1", "true")


def pytest_collection_modifyitems(config, items):
    if _run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow: runs in CI (CI=true) or with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
