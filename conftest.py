"""Test session set-up: everything (unit tests and notebook kernels, which inherit the
environment) runs in the smoke profile and writes results and data caches to throw-away folders."""
import os
import tempfile

import pytest

os.environ["WEBMM_PROFILE"] = "smoke"
os.environ["WEBMM_RESULTS"] = tempfile.mkdtemp(prefix="webmm-results-")
os.environ["WEBMM_DATA"] = tempfile.mkdtemp(prefix="webmm-data-")     # never the user's cache
os.environ.setdefault("OMP_NUM_THREADS", "1")   # pytest-xdist already runs one worker per core
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(items):
    """nbval's notebook cells run in kernels: slow, like the tests marked `@pytest.mark.slow`
    (`pytest -m "not slow"` is the quick loop; plain `pytest` runs everything)."""
    for item in items:
        if not isinstance(item, pytest.Function):
            item.add_marker(pytest.mark.slow)
