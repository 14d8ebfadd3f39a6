"""Hot reload of the sidecar's configuration (crates/sidecar/src/reload.rs): a changed file is
applied while requests run, none failing; a broken one, or one that changes what only a restart
applies, leaves the running configuration serving; SIGHUP reloads too (heads included). Each
attempt is counted in vane_config_reloads_total{result}."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import yaml

from helpers import admin_request

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stack import CONFIG, config_variant, wait_until  # noqa: E402

NO_STORE = {"x-vane-cache-control": "no-store"}


def reloads(v) -> dict[str, int]:
    return {m.group(1): int(float(m.group(2))) for m in
            re.finditer(r'^vane_config_reloads_total\{result="([^"]+)"\} (\S+)', v.get_metrics_text(), re.M)}


def replace_file(path: Path, text: str) -> None:
    """A new file renamed into place, as Kubernetes and editors do: the inode changes."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


class Load(threading.Thread):
    """Maths questions, one after another, each a different one and never cached, until stopped:
    (sent at, status, model, fallback) per answer."""

    def __init__(self, v):
        super().__init__(daemon=True)
        self.v, self.answers, self.stopping = v, [], threading.Event()

    def run(self):
        n = 0
        while not self.stopping.is_set():
            n += 1
            sent = time.monotonic()
            r = self.v.chat(f"Solve {n}x + 4 = {n + 19} for x.", headers=NO_STORE)
            self.answers.append((sent, r.status, r.header("x-vane-model"), r.header("x-vane-fallback")))

    def models_since(self, t: float, at_least: int = 5) -> set[str]:
        wait_until(lambda: sum(1 for a in self.answers if a[0] >= t) >= at_least, "answers under the new configuration", 15.0)
        return {a[2] for a in self.answers if a[0] >= t}

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.join(30)


def with_math_on(text: str, model: str) -> str:
    config = yaml.safe_load(text)
    for c in config["routing"]["categories"]:
        if c["name"] == "math":
            c.pop("model_scores", None)
            c["model"] = model
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def test_a_changed_file_applies_under_load_and_a_bad_one_changes_nothing(make_stack, tmp_path):
    path = config_variant(tmp_path / "vane.yaml")
    v = make_stack(sidecar_config=path)
    original = path.read_text()
    epoch = lambda: admin_request(v.stack, "/v1/cache/stats")[1]["epoch"]  # noqa: E731
    before = epoch()
    cached = v.chat_stored("Solve 2x + 6 = 10 for x.")
    assert cached.header("x-vane-model") == "math-model", cached

    with Load(v) as load:
        assert load.models_since(0) == {"math-model"}
        replace_file(path, with_math_on(original, "general-model"))
        wait_until(lambda: reloads(v).get("applied") == 1, "the new file applied", 15.0)
        applied = time.monotonic()
        assert load.models_since(applied) == {"general-model"}, "new requests go to the category's new model"
        assert epoch() != before, "routing changed: so did the cache epoch"

        # A broken file: reported, counted, and the last good configuration keeps serving.
        broken = yaml.safe_load(with_math_on(original, "math-model"))
        broken["cache"]["threshold"] = 2
        replace_file(path, yaml.safe_dump(broken, sort_keys=False))
        wait_until(lambda: reloads(v).get("invalid") == 1, "the broken file counted", 15.0)
        assert load.models_since(time.monotonic()) == {"general-model"}
        assert "cache.threshold: must be in (0, 1]" in (v.stack.dir / "sidecar.log").read_text()

        # A change only a restart applies: none of the file is applied, the fields are named.
        restart_only = yaml.safe_load(with_math_on(original, "math-model"))
        restart_only["model"]["threads"] = 3
        replace_file(path, yaml.safe_dump(restart_only, sort_keys=False))
        wait_until(lambda: reloads(v).get("needs_restart") == 1, "the restart-only change counted", 15.0)
        assert load.models_since(time.monotonic()) == {"general-model"}
        assert "model.threads" in (v.stack.dir / "sidecar.log").read_text()
    failed = [a for a in load.answers if a[1] != 200 or a[3] is not None]
    assert not failed and len(load.answers) > 20, f"{len(failed)} of {len(load.answers)} failed: {failed[:5]}"
    print(f"reload under load: {len(load.answers)} requests, 0 failed; reloads {reloads(v)}")

    # The answer cached under the old routing policy is not served under the new one.
    r = v.chat("Solve 2x + 6 = 10 for x.")
    assert r.status == 200 and r.cache == "miss" and r.header("x-vane-model") == "general-model", r
    assert reloads(v) == {"applied": 1, "invalid": 1, "needs_restart": 1}


def test_sighup_reloads_the_heads_too(make_stack, tmp_path):
    """SIGHUP re-reads everything, the heads too (a retrained head at the same path: the file
    watch does not look at heads). Here the routing head's copy has 'math' and 'law' swapped."""
    head = tmp_path / "topics.json"
    shutil.copy(CONFIG.parent / "heads" / "mmlu_pro_categories.json", head)
    v = make_stack(sidecar_config=config_variant(tmp_path / "vane.yaml", {"routing": {"head": str(head)}}))
    r = v.chat("Solve 3x + 4 = 19 for x.", headers=NO_STORE)
    assert (r.header("x-vane-model"), r.header("x-vane-category")) == ("math-model", "math"), r

    v.stack.sidecar.send_signal(signal.SIGHUP)
    wait_until(lambda: reloads(v).get("unchanged") == 1, "an unchanged configuration", 15.0)

    swapped = json.loads(head.read_text())
    labels = swapped["labels"]
    i, j = labels.index("math"), labels.index("law")
    labels[i], labels[j] = labels[j], labels[i]
    head.write_text(json.dumps(swapped))
    v.stack.sidecar.send_signal(signal.SIGHUP)
    wait_until(lambda: reloads(v).get("applied") == 1, "the retrained head applied", 15.0)
    r = v.chat("Solve 3x + 4 = 19 for x.", headers=NO_STORE)
    assert (r.status, r.header("x-vane-model"), r.header("x-vane-category")) == (200, "general-model", "law"), r
    assert v.stack.sidecar.poll() is None, "SIGHUP does not end the sidecar"
