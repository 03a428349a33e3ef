"""Test session set-up: everything (unit tests and notebook kernels, which inherit the
environment) runs in the smoke profile and writes results and data caches to throw-away folders."""
import os
import tempfile

os.environ["WEBMM_PROFILE"] = "smoke"
os.environ["WEBMM_RESULTS"] = tempfile.mkdtemp(prefix="webmm-results-")
os.environ["WEBMM_DATA"] = tempfile.mkdtemp(prefix="webmm-data-")     # never the user's cache
os.environ.setdefault("OMP_NUM_THREADS", "1")   # pytest-xdist already runs one worker per core
os.environ.setdefault("MPLBACKEND", "Agg")
