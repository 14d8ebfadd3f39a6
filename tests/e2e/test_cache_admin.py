"""The cache's admin API on the sidecar's admin port: stats, invalidate (by entry id, by tenant —
given as the tenant or as the raw credential, hashed the way the filter does — by prompt) and
flush, each proved by what the next request gets, through Envoy."""
from __future__ import annotations

import pytest

from helpers import admin_request

ROME = "Who was the first emperor of Rome?"
MATH = "What is the integral of x squared?"


@pytest.fixture
def admin_stack(make_stack):
    return make_stack()  # its own cache: counts below are exact


def test_stats_count_entries_groups_and_tenants(admin_stack):
    v = admin_stack
    other = v.api_key + "-other"
    v.chat_stored(ROME)
    v.chat_stored(MATH)
    v.chat_stored(ROME, api_key=other)
    status, stats = admin_request(v.stack, "/v1/cache/stats")
    assert status == 200, stats
    assert (stats["entries"], stats["tenants"], stats["backend"]) == (3, 2, "memory"), stats
    assert stats["payload_bytes"] > 0 and len(stats["epoch"]) == 16, stats


def test_invalidate_by_credential_touches_only_that_tenant(admin_stack):
    v = admin_stack
    other = v.api_key + "-other"
    v.chat_stored(ROME)
    v.chat_stored(ROME, api_key=other)
    status, got = admin_request(v.stack, "/v1/cache/invalidate", {"api_key": f"Bearer {v.api_key}"})
    assert (status, got) == (200, {"invalidated": 1})
    assert v.chat(ROME).cache == "miss"
    assert v.chat(ROME, api_key=other).cache == "hit"


def test_invalidate_by_entry_id_and_by_prompt(admin_stack):
    v = admin_stack
    v.chat_stored(ROME)
    v.chat_stored(MATH)
    hit = v.chat(ROME)
    assert hit.cache == "hit" and hit.header("x-vane-cache-entry"), hit
    status, got = admin_request(v.stack, "/v1/cache/invalidate", {"id": hit.header("x-vane-cache-entry")})
    assert (status, got) == (200, {"invalidated": 1})
    assert v.chat(ROME).cache == "miss"
    status, got = admin_request(v.stack, "/v1/cache/invalidate", {"prompt": f"  {MATH} ", "model": "auto"})
    assert (status, got) == (200, {"invalidated": 1}), "whitespace aside, as the exact tier compares"
    assert v.chat(MATH).cache == "miss"


def test_flush_empties_the_cache(admin_stack):
    v = admin_stack
    v.chat_stored(ROME)
    v.chat_stored(MATH)
    status, got = admin_request(v.stack, "/v1/cache/flush", {})
    assert (status, got) == (200, {"invalidated": 2})
    assert admin_request(v.stack, "/v1/cache/stats")[1]["entries"] == 0
    assert v.chat(ROME).cache == "miss"
    assert "vane_cache_invalidated_total 2" in v.get_metrics_text()


def test_bad_invalidations_are_openai_errors(admin_stack):
    v = admin_stack
    for body in [{}, {"tenat": "x"}, {"id": "not-a-number"}, {"tenant": "k:1", "api_key": "sk"}]:
        status, got = admin_request(v.stack, "/v1/cache/invalidate", body)
        assert status == 400 and got["error"]["type"] == "invalid_request_error", (body, got)
    v.chat_stored(ROME)
    assert v.chat(ROME).cache == "hit", "nothing was removed"
