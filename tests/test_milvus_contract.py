"""The cache contract suite (crates/cache/tests/cache_contract.rs) against a real Milvus 2.3.5: starts
the server (tests/milvus_server.py) and runs the suite's Milvus half, which `cargo test` alone
leaves ignored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from milvus_server import MilvusServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    with MilvusServer(tmp_path_factory.mktemp("milvus")) as server:
        yield server


def test_contract_suite_passes_against_milvus(milvus):
    env = dict(os.environ, VANE_MILVUS_ADDR=milvus.address, RUST_BACKTRACE="0")
    cmd = ["cargo", "test", "-q", "-p", "vane-cache", "--test", "cache_contract", "--", "--include-ignored", "--test-threads", "4"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    # Both halves ran: 9 cases x 2 backends, memory_stays_within_max_bytes and the unreachable-server case; none ignored.
    assert "20 passed" in out and "0 ignored" in out, out[-3000:]
