"""Fixtures for the end-to-end tests: the real stack (mock upstreams + sidecar + Envoy with the
wasm filter), started by tests/stack.py on free loopback ports and always stopped.

* ``stack``: one stack for the whole session, shared by every test that does not break it.
* ``vane``: a per-test handle on it (helpers.Vane) with its own API key (so its own cache
  tenant: tests cannot hit each other's cache entries), upstream records reset, and a check
  that the wasm VM / sidecar logged no crash during the test.
* ``make_stack``: a factory for tests that need their own stack (a different filter
  configuration, or one that stops the sidecar); stopped at the end of the test.

When a test fails, the logs of the stacks it used are attached to its report.
"""
from __future__ import annotations

import contextlib
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: stack.py

from helpers import Vane  # noqa: E402
from stack import Stack  # noqa: E402


@contextlib.contextmanager
def running_stack(**kwargs):
    kwargs.setdefault("upstream_delay", 0)
    with Stack(**kwargs) as s:  # __enter__ stops what it started if start() fails
        yield s


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    # Logs under pytest's temporary directory: kept for the last few runs, then cleaned up.
    with running_stack(log_dir=tmp_path_factory.mktemp("stack")) as s:
        yield s


def _handle(stack, request) -> Vane:
    name = request.node.name.replace("[", "-").replace("]", "")
    v = Vane(stack, api_key=f"sk-e2e-{name}-{uuid.uuid4().hex[:8]}")
    v.reset_upstreams()
    v.mark_crashes()
    return v


@pytest.fixture
def vane(stack, request):
    v = _handle(stack, request)
    yield v
    v.assert_no_crash()


@pytest.fixture
def make_stack(request, tmp_path_factory):
    """``make_stack(**Stack kwargs) -> Vane`` on a fresh stack, stopped after the test."""
    with contextlib.ExitStack() as stacks:
        handles = []

        def make(**kwargs) -> Vane:
            kwargs.setdefault("log_dir", tmp_path_factory.mktemp("stack"))
            s = stacks.enter_context(running_stack(**kwargs))
            v = _handle(s, request)
            handles.append(v)
            return v

        request.node._vane_handles = handles
        yield make
        for v in handles:
            v.assert_no_crash()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    stacks = []
    for value in list(getattr(item, "funcargs", {}).values()) + \
            [h for h in getattr(item, "_vane_handles", [])]:
        s = value if isinstance(value, Stack) else getattr(value, "stack", None)
        if isinstance(s, Stack) and s not in stacks:
            stacks.append(s)
    for s in stacks:
        try:
            report.sections.append((f"vane stack logs ({s.dir})", s.logs()))
        except OSError as e:  # the logs are a help, never the failure
            report.sections.append(("vane stack logs", f"unreadable: {e}"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The fault suite's table (tests/e2e/test_faults.py), when it ran."""
    for line in getattr(config, "_vane_fault_table", []):
        terminalreporter.write_line(line)
