"""Shared fixtures for tandem's Python tests.

Run with the reference environment:  scripts/python-env.sh && .venv/bin/python -m pytest tests/python
The tandem binary is $TANDEM_BIN (default <repo>/build/tandem). Tests that drive it FAIL with a
clear message when it is missing (they are not skipped): build it first (cmake --build build).

Skip policy: scripts/test.sh runs pytest with -rs, so every skip prints its reason. With CI=true,
coverage that CI must have cannot be lost silently: a test skipped because the OpenCL backend,
an OpenCL device (PoCL) or mpirun is missing FAILS instead (REQUIRED_IN_CI); skips for a missing
CUDA GPU stay skips (CI has no GPU).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = REPO_ROOT / "reference"
if str(REFERENCE_DIR) not in sys.path:
    sys.path.insert(0, str(REFERENCE_DIR))

DEFAULT_TIMEOUT_S = 600


def _torch_threads() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(int(os.environ.get("TANDEM_TEST_THREADS", "2")))


_torch_threads()


def tandem_path() -> Path:
    return Path(os.environ.get("TANDEM_BIN", REPO_ROOT / "build" / "tandem"))


@dataclass
class RunResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (f"$ {shlex.join(self.args)}\nexit code {self.returncode}\n"
                f"--- stdout (tail) ---\n{self.stdout[-4000:]}\n"
                f"--- stderr (tail) ---\n{self.stderr[-4000:]}")


class Tandem:
    """Runs the tandem CLI. `run` returns a RunResult whatever the exit code; `__call__` also
    fails the test (showing the command, exit code and output) when the exit code is not 0."""

    def __init__(self, binary: Path):
        self.binary = binary

    def run(self, *args, timeout: float = DEFAULT_TIMEOUT_S, cwd: Path | None = None,
            env: dict | None = None) -> RunResult:
        argv = [str(self.binary)] + [str(a) for a in args]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                               cwd=cwd or REPO_ROOT, env=env)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"timed out after {timeout} s: {shlex.join(argv)}\n"
                        f"stdout: {(e.stdout or b'')[-2000:]!r}\nstderr: {(e.stderr or b'')[-2000:]!r}")
        return RunResult(argv, p.returncode, p.stdout, p.stderr)

    def __call__(self, *args, **kw) -> RunResult:
        r = self.run(*args, **kw)
        if r.returncode != 0:
            pytest.fail("tandem failed:\n" + r.describe())
        return r


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tandem_bin() -> Path:
    """Path of the tandem binary; fails (does not skip) when it is missing."""
    path = tandem_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"tandem binary not found at {path}: build it (cmake -B build -S . && "
                    f"cmake --build build -j) or set TANDEM_BIN", pytrace=False)
    return path


@pytest.fixture(scope="session")
def tandem(tandem_bin: Path) -> Tandem:
    return Tandem(tandem_bin)


@pytest.fixture(scope="session")
def run_tandem(tandem: Tandem):
    """run_tandem(*args, check=True, timeout=...) -> RunResult(args, returncode, stdout, stderr)."""
    def _run(*args, check: bool = True, **kw) -> RunResult:
        return tandem(*args, **kw) if check else tandem.run(*args, **kw)
    return _run


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    """A temporary directory shared by the whole session (for expensive artifacts)."""
    return tmp_path_factory.mktemp("tandem-session")


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    path = REPO_ROOT / "data" / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.fail(f"missing {path}", pytrace=False)
    return path


def max_rel_err(actual, expected) -> float:
    """The comparison metric used throughout: max|a - b| / max|b| (b = reference)."""
    import numpy as np
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    denom = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if b.size else 0.0
    return diff / denom if denom > 0 else diff


# --- Skip policy (see the module docstring) -------------------------------------------------------
IN_CI = os.environ.get("CI") == "true"
# Skip reasons that mean CI lost a backend or a runtime it must test with.
REQUIRED_IN_CI = re.compile(r"opencl|pocl|mpirun|\bmpi\b", re.IGNORECASE)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (IN_CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if REQUIRED_IN_CI.search(reason):
        report.outcome = "failed"
        report.longrepr = (f"CI=true: {item.nodeid} was skipped ({reason}), but CI must run it: OpenCL (PoCL) and "
                           f"mpirun are required there (scripts/setup.sh installs pocl-opencl-icd, libclblast-dev "
                           f"and openmpi-bin); build tandem with them")
