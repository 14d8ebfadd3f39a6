"""The fault suite: under a steady mixed load through Envoy (tests/load.py: 8 clients, hits,
misses, streams), one fault at a time, counted per scenario:

* the upstream resets mid-answer (``POST /mock/fault reset`` on both mock models), or stalls
  (``stall``: sends nothing more until the fault is cleared, then closes);
* the sidecar is stopped (SIGSTOP, SIGCONT after the fault window), or killed (SIGKILL) and
  started again;
* one of two sidecar replicas is killed (and then started again);
* Milvus (the cache, shared by the replicas) is killed and started again.

Each prints a row: sent / failed / upstream failed / fell back (x-vane-fallback) / served stale /
recovery, and asserts: no client request failed except those the upstream itself broke (the mock
marks them); no hit was stale (every hit is a whole answer to one of the tenant's own prompts);
no broken answer was stored (each is asked for again and is not a hit); the filter's gauges of
held tickets and queued Stores are back at 0; and recovery within 2 s, measured from the moment
the fault was cleared (SIGCONT, the restarted process ready, the upstream answering again; for
the replica, from its death) to the end of the last request sent after it that was not served
normally (a fallback, a failure, or for the cache scenarios a warm prompt that missed).

``make test`` runs every scenario once with 2-second faults; ``make faults`` runs them three
times each with 4-second faults (VANE_FAULT_ROUNDS, VANE_FAULT_SECONDS).
"""
from __future__ import annotations

import os
import re
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import chat_body

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from load import ANSWER, FILTER_UNDER_LOAD, MILVUS_UNDER_LOAD, UNDER_LOAD, Load, Result, set_upstream_fault  # noqa: E402
from milvus_server import MilvusServer  # noqa: E402
from stack import Stack, config_variant, wait_until  # noqa: E402
from test_replicas import counts  # noqa: E402

ROUNDS = int(os.environ.get("VANE_FAULT_ROUNDS", "1"))
FAULT_SECONDS = float(os.environ.get("VANE_FAULT_SECONDS", "2"))
OBSERVE_SECONDS = float(os.environ.get("VANE_FAULT_OBSERVE", "3"))  # after the fault is cleared
RECOVERY_SECONDS = 2.0
BASELINE_REQUESTS = 30




@dataclass
class Row:
    scenario: str
    sent: int
    failed: int
    upstream_failed: int
    fell_back: int
    stale: int
    recovery_ms: list[int | None]
    note: str = ""

    HEADER = f"{'scenario':<22} {'sent':>6} {'failed':>6} {'upstream':>8} {'fell back':>9} {'stale':>5}  recovery ms"

    def __str__(self) -> str:
        rec = ", ".join("none" if ms is None else str(ms) for ms in self.recovery_ms)
        return (f"{self.scenario:<22} {self.sent:>6} {self.failed:>6} {self.upstream_failed:>8} {self.fell_back:>9} "
                f"{self.stale:>5}  {rec}{'  ' + self.note if self.note else ''}")


@pytest.fixture(scope="module")
def rows(request):
    """The table's rows; conftest's pytest_terminal_summary prints them at the end of the run."""
    got: list[Row] = []
    yield got
    request.config._vane_fault_table = [
        f"fault suite ({ROUNDS} round(s), {FAULT_SECONDS:g} s faults, 8 clients):", Row.HEADER, *map(str, got)]


@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    with MilvusServer(tmp_path_factory.mktemp("faults-milvus")) as server:
        yield server


def milvus_stack(tmp_path: Path, milvus: MilvusServer, collection: str, **kw) -> Stack:
    key = tmp_path / "ticket.key"
    key.write_bytes(bytes(range(32)))
    config = config_variant(tmp_path / "vane.yaml", "milvus", {"cache": {
        "milvus": {"address": milvus.address, "collection": collection}, "tickets": {"key_file": str(key)}}}, UNDER_LOAD, MILVUS_UNDER_LOAD)
    return Stack(sidecar_config=config, upstream_delay=0, log_dir=tmp_path / "stack", filter_config=FILTER_UNDER_LOAD, **kw)


@pytest.fixture(scope="module")
def single(milvus, tmp_path_factory):
    """One sidecar, the cache on Milvus (so it outlives a sidecar restart)."""
    with milvus_stack(tmp_path_factory.mktemp("faults-single"), milvus, "faults_single") as s:
        yield s


@pytest.fixture(scope="module")
def pair(milvus, tmp_path_factory):
    """Two sidecar replicas on the same Milvus (another collection), one ticket key."""
    with milvus_stack(tmp_path_factory.mktemp("faults-pair"), milvus, "faults_pair", sidecars=2) as s:
        yield s


# ---- measuring -------------------------------------------------------------------------------

def served_normally(r: Result, *, cache: bool) -> bool:
    """Whole and right, without a fallback; with ``cache``, a warm prompt is a hit again."""
    return r.ok and r.fallback is None and (not cache or r.kind != "hit" or r.cache == "hit")


def recovery_ms(load: Load, cleared: float, until: float, normal) -> int | None:
    """From ``cleared`` to the end of the last request sent after it that was not served
    normally; None when fewer than 10 were served normally after that (not recovered)."""
    after = load.since(cleared, until)
    last_bad = max((r.t1 for r in after if not normal(r)), default=cleared)
    if sum(r.t0 > last_bad for r in after) < 10:
        return None
    return round(max(0.0, last_bad - cleared) * 1000)


def envoy_gauges(stack: Stack) -> dict[str, float]:
    """The filter's own stats (vane_filter_*) from Envoy's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.envoy_admin_port}/stats/prometheus", timeout=5) as r:
        text = r.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(vane_filter_\w+)(?:\{[^}]*\})? (\S+)$", text, re.M)}


def assert_filter_idle(stack: Stack) -> dict[str, float]:
    """Once the load has stopped, no ticket is held and no Store waits in the filter."""
    def idle():
        g = envoy_gauges(stack)
        return g if g.get("vane_filter_tickets_held") == 0 and g.get("vane_filter_pending_stores") == 0 else None
    try:
        return wait_until(idle, "filter gauges back at 0", 10)
    except TimeoutError:
        raise AssertionError(f"filter gauges after the load: {envoy_gauges(stack)}") from None


def assert_nothing_broken_stored(load: Load) -> int:
    """Every answer the upstream broke is asked for again: not a hit (or a hit on another, whole
    answer of that tenant: a semantic neighbour), so nothing broken was stored."""
    broken = [r for r in load.results if r.upstream_fault]
    by_client = {c.index: c for c in load.clients}
    for r in broken:
        got = by_client[r.thread].vane.probe(chat_body(r.prompt))
        if got.cache == "hit":
            m = ANSWER.match(got.content)
            assert m and m["prompt"] != r.prompt, f"a broken answer was stored: {r} -> {got}"
        else:
            assert got.status == 503 and got.cache == "miss", got
    return len(broken)


@dataclass
class Outcome:
    results: list[Result]
    marks: list[tuple[float, float, float, float]]  # per round: began, injected, cleared, ended

    def during_faults(self) -> list[Result]:
        return [r for r in self.results if any(inj <= r.t0 < clr for _, inj, clr, _ in self.marks)]


def run_scenario(stack: Stack, rows: list[Row], name: str, inject, clear, *, cache: bool, prepare=None,
                 note=None) -> Outcome:
    """Warm up, then per round: ``prepare()``, a baseline, ``inject()``, the fault window,
    ``clear()`` (returns when the fault is over; its time, or the one it returns, is when
    recovery is measured from), the observation window. Asserts the invariants and adds the
    scenario's row."""
    load = Load(stack, name=name)
    load.warm_up()
    normal = lambda r: served_normally(r, cache=cache)  # noqa: E731
    marks = []
    with load:
        for _ in range(ROUNDS):
            if prepare:
                prepare()
            began = time.monotonic()
            load.wait_for(BASELINE_REQUESTS, began)
            injected = time.monotonic()
            inject()
            time.sleep(FAULT_SECONDS)
            cleared = clear() or time.monotonic()
            time.sleep(OBSERVE_SECONDS)
            marks.append((began, injected, cleared, time.monotonic()))
    load.mark_upstream_faults()
    results = load.results[:]
    scenario = [r for r in results if r.t0 >= marks[0][0]]
    failed = [r for r in scenario if not r.ok and not r.upstream_fault and not r.stale]
    stale = [r for r in scenario if r.stale]
    row = Row(name, len(scenario), len(failed), sum(r.upstream_fault for r in scenario),
              sum(r.fallback is not None for r in scenario), len(stale),
              [recovery_ms(load, cleared, end, normal) for _, _, cleared, end in marks], note() if note else "")
    rows.append(row)
    print(Row.HEADER, row, sep="\n")
    assert not failed, f"{len(failed)} client requests failed: {failed[:5]}"
    assert not stale, f"{len(stale)} stale hits: {stale[:5]}"
    assert_nothing_broken_stored(load)
    assert_filter_idle(stack)
    assert all(ms is not None and ms <= RECOVERY_SECONDS * 1000 for ms in row.recovery_ms), \
        f"recovery over {RECOVERY_SECONDS} s (none: not within {OBSERVE_SECONDS:g} s):\n{Row.HEADER}\n{row}"
    return Outcome(results, marks)


# ---- the scenarios -------------------------------------------------------------------------

def test_upstream_resets_mid_answer(single, rows):
    out = run_scenario(single, rows, "upstream reset", lambda: set_upstream_fault(single, "reset"),
                       lambda: set_upstream_fault(single, None), cache=False)
    assert any(r.upstream_fault for r in out.results), "the fault broke no request"


def test_upstream_stalls(single, rows):
    def clear():
        set_upstream_fault(single, None)  # the stalled answers end now (closed unfinished)
    out = run_scenario(single, rows, "upstream stall", lambda: set_upstream_fault(single, "stall"), clear, cache=False)
    assert any(r.upstream_fault for r in out.results), "the fault broke no request"
    # While the models stalled, the cache went on answering hits, at once.
    hits = [r for r in out.during_faults() if r.cache == "hit"]
    assert hits and all(r.ok and r.t1 - r.t0 < 1.0 for r in hits), hits[:5]


def test_sidecar_sigstop_sigcont(single, rows):
    pid = single.sidecar.pid

    def clear():
        os.kill(pid, signal.SIGCONT)
        return time.monotonic()
    try:
        run_scenario(single, rows, "sidecar SIGSTOP", lambda: os.kill(pid, signal.SIGSTOP), clear, cache=True)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_sidecar_sigkill_and_restart(single, rows):
    def clear():
        single.restart_replica(0)  # same ports; returns once /readyz answers
        return time.monotonic()
    run_scenario(single, rows, "sidecar SIGKILL", lambda: single.sidecar.kill(), clear, cache=True)


def test_one_of_two_replicas_dies(pair, rows):
    killed_at, rejoined = [], []
    admin = pair.replica_ports[1][1]

    def kill():
        pair.replicas[1].kill()  # no goodbye: as if its node died
        killed_at.append(time.monotonic())

    def restart():
        """Starts the dead replica again and waits until Envoy gives it calls: once its
        ejection (outlier_detection base_ejection_time 10 s, longer each time) has run out.
        Timed, not held to the 2 s bound."""
        if pair.replicas[1].poll() is None:
            return
        started = time.monotonic()
        pair.restart_replica(1)
        wait_until(lambda: sum(counts(admin, "vane_route_decisions_total", "decision").values()) > 0,
                   "the restarted replica routes again", 90)
        rejoined.append(round((time.monotonic() - started) * 1000))

    # Recovery counts from the death: nothing clears it but Envoy's ejecting the dead replica.
    run_scenario(pair, rows, "1 of 2 replicas killed", kill, lambda: killed_at[-1], cache=True, prepare=restart)
    with Load(pair, name="rejoin", threads=2, warm=0):  # traffic, for Envoy to send it some
        restart()
    rows[-1].note = f"(restarted, it routes again after {', '.join(map(str, rejoined))} ms)"
    print(rows[-1])


def test_milvus_sigkill_and_restart(single, milvus, rows):
    admin = single.admin_port

    def clear():
        milvus.start()  # same data dir and ports; returns once it is healthy...
        # ...and it is back once it answers queries on the collection again (its segments loaded).
        wait_until(lambda: milvus.queryable("faults_single"), "Milvus answers queries on the collection", 120)
        return time.monotonic()
    run_scenario(single, rows, "Milvus SIGKILL", lambda: milvus.stop(kill=True), clear, cache=True)
    transitions = counts(admin, "vane_cache_breaker_transitions_total", "to")
    assert transitions.get("open", 0) >= 1 and transitions.get("closed", 0) >= 1, transitions
    assert counts(admin, "vane_cache_breaker_open", "backend").get("milvus") == 0
