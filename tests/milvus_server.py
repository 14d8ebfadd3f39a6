"""A real Milvus 2.3.5 standalone server for the tests, from the PyPI `milvus` wheel.

The wheel's own `milvus-server` wrapper lets ports drift on restart and waits up to 1800 s on
stop, so the binary is run directly: unpacked once into target/milvus/bin, configured with the
proxy on the caller's port, every other port pinned to a free loopback port (kept in the data dir,
so a restart comes back on the same ones), embedded etcd on loopback and a short graceful stop.
Stopped by PID.

    python tests/milvus_server.py --port 19530     # runs until Ctrl-C / SIGTERM
    python tests/milvus_server.py -- CMD ARGS...   # runs CMD with VANE_MILVUS_ADDR set, then stops
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from stack import ROOT, free_port  # tests/ is on sys.path: run from there, or imported by a test

BIN_CACHE = ROOT / "target" / "milvus"

# Template keys of the wheel's config.yaml.template that are ports.
PORT_KEYS = ["etcd_port", "root_coord_port", "proxy_internal_port", "query_coord_port", "query_node_port",
             "index_coord_port", "index_node_port", "data_coord_port", "data_node_port"]


def milvus_package() -> Path:
    import milvus  # the PyPI wheel: lzma-packed binary + config template

    return Path(milvus.__file__).parent


def binary() -> Path:
    """Unpacks the server once (the wheel's own helper skips files whose checksum matches)."""
    import milvus

    milvus._initialize_data_files(str(BIN_CACHE))
    return BIN_CACHE / "bin" / "milvus"


def render_config(template: str, values: dict[str, object]) -> str:
    def fill(m: re.Match) -> str:
        key = m.group(1)
        if key in values:
            return str(values[key]).lower() if isinstance(values[key], bool) else str(values[key])
        if m.group(3) is None:
            raise KeyError(f"milvus config template needs '{key}'")
        return m.group(3).strip()

    text = re.sub(r"\{\{\s*(\w+)\s*(\(\w+\))?\s*(?::([^}]*))?\}\}", fill, template)
    # Advertise loopback, not the first unicast address; stop within seconds, not 30 minutes.
    text = re.sub(r"^(\s+)ip:.*$", r"\1ip: 127.0.0.1", text, flags=re.M)
    text = re.sub(r"gracefulStopTimeout: \d+", "gracefulStopTimeout: 3", text)
    text = text.replace("localhost:", "127.0.0.1:")
    return text


class MilvusServer:
    """One standalone Milvus with its data under `data_dir`; `port` is the gRPC proxy port."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None):
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vane-milvus-")
            data_dir = Path(self._tmp.name)
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        ports_file = self.dir / "ports.json"
        if ports_file.exists():
            self.ports = json.loads(ports_file.read_text())
        else:
            self.ports = {key: free_port() for key in PORT_KEYS + ["etcd_peer_port", "health_port"]}
            self.ports["proxy_port"] = port or free_port()
            ports_file.write_text(json.dumps(self.ports))
        self.proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return self.ports["proxy_port"]

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> dict[str, str]:
        for sub in ("configs", "logs", "data", "run"):
            (self.dir / sub).mkdir(exist_ok=True)
        data = self.dir / "data"
        values = {key: self.ports[key] for key in PORT_KEYS + ["proxy_port"]}
        values.update(etcd_log_path=self.dir / "logs" / "etcd.log", system_log_path=self.dir / "logs",
                      etcd_data_dir=data / "etcd.data", local_storage_dir=data, rocksmq_data_dir=data / "rocksmq")
        template = (milvus_package() / "data" / "config.yaml.template").read_text()
        (self.dir / "configs" / "milvus.yaml").write_text(render_config(template, values))
        (self.dir / "configs" / "glog.conf").write_text((milvus_package() / "data" / "glog.conf").read_text())
        client = f"http://127.0.0.1:{self.ports['etcd_port']}"
        peer = f"http://127.0.0.1:{self.ports['etcd_peer_port']}"
        etcd = (f"name: default\ndata-dir: {data / 'etcd.data'}\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
                f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\ninitial-cluster: default={peer}\n")
        (self.dir / "configs" / "etcd.yaml").write_text(etcd)
        exe = binary()
        env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(self.ports["health_port"]),
                   MILVUSCONF=str(self.dir / "configs"), ETCD_CONFIG_PATH=str(self.dir / "configs" / "etcd.yaml"),
                   MILVUS_RUN_DIR=str(self.dir / "run"),
                   LD_LIBRARY_PATH=f"{exe.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}")
        return env

    def start(self, timeout: float = 120.0) -> "MilvusServer":
        env = self._write_config()
        log = open(self.dir / "logs" / "milvus-stdout.log", "ab")
        self.proc = subprocess.Popen([str(binary()), "run", "standalone"], cwd=self.dir, env=env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.wait_ready(timeout)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['health_port']}/healthz", timeout=1) as r:
                return r.status == 200 and r.read().strip() == b"OK"
        except OSError:
            return False

    def queryable(self, collection: str) -> bool:
        """Whether the server answers a query on ``collection`` (its REST API on the proxy port):
        after a restart that is seconds later than /healthz, once the collection is loaded."""
        req = urllib.request.Request(f"{self.address}/v1/vector/query", method="POST",
                                     data=json.dumps({"collectionName": collection, "filter": 'id == ""',
                                                      "outputFields": ["id"], "limit": 1}).encode(),
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return json.load(r).get("code") == 200
        except (OSError, ValueError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"milvus exited with {self.proc.returncode}; see {self.dir / 'logs'}")
            if self.healthy():
                return
            time.sleep(0.2)
        raise TimeoutError(f"milvus not healthy after {timeout:.0f} s; see {self.dir / 'logs'}")

    def pause(self) -> None:
        """SIGSTOP: the server hangs as a wedged node does, its connections open and unanswered."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (SIGKILL with `kill`, or after 15 s) to the server's PID; data stays for a restart."""
        if self.proc is None:
            return
        self.resume()  # a paused server would not act on SIGTERM
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "MilvusServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=19530, help="gRPC port (127.0.0.1)")
    ap.add_argument("--dir", type=Path, help="data dir (default: a temporary one, removed on exit)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="after --: a command to run against the server")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    server = MilvusServer(args.dir, args.port if not command or args.port != 19530 else None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        started = time.monotonic()
        server.start()
        print(f"milvus ready at {server.address} in {time.monotonic() - started:.1f} s (data: {server.dir})", flush=True)
        if command:
            return subprocess.run(command, env=dict(os.environ, VANE_MILVUS_ADDR=server.address)).returncode
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
