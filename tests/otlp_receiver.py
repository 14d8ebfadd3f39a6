"""A real OTLP/gRPC trace receiver for the tests: the collector's `TraceService/Export` on
127.0.0.1 (a free port), built on PyPI's opentelemetry-proto and grpcio. It keeps every span
it is sent, flattened into :class:`Span`; nothing is forwarded anywhere.

    with OtlpReceiver() as rx:
        ...  # point the sidecar at rx.endpoint
        spans = rx.wait_for(lambda spans: ..., timeout=5)

Or as a process (a collector for benchmarks): ``python tests/otlp_receiver.py [--port N]`` prints
``ready <port>``, keeps only a count, and prints ``spans <n>`` when SIGTERM/SIGINT stops it.
"""
from __future__ import annotations

import argparse
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    service: str
    kind: int
    status_code: int  # 0 unset, 1 ok, 2 error
    start_ns: int
    end_ns: int
    attributes: dict = field(default_factory=dict)


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class _Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: "OtlpReceiver"):
        self.receiver = receiver

    def Export(self, request, context):  # noqa: N802 (the generated name)
        if not self.receiver.keep:
            with self.receiver.lock:
                self.receiver.received += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                self.receiver.exports += 1
            return trace_service_pb2.ExportTraceServiceResponse()
        got = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(Span(
                        name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(), service=resource.get("service.name", ""),
                        kind=s.kind, status_code=s.status.code, start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano, attributes={a.key: _value(a.value) for a in s.attributes}))
        with self.receiver.lock:
            self.receiver.spans.extend(got)
            self.receiver.received += len(got)
            self.receiver.exports += 1
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    def __init__(self, port: int = 0, keep: bool = True):
        self.lock = threading.Lock()
        self.keep = keep  # False: count the spans only
        self.spans: list[Span] = []
        self.exports = 0
        self.received = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Service(self), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "OtlpReceiver":
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(grace=None)

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, done, timeout: float = 5.0) -> list[Span]:
        """Waits until ``done(spans received so far)`` is truthy; returns those spans."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = list(self.spans)
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"not received within {timeout}s; got {[(s.name, s.trace_id[:8]) for s in spans]}")
            time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    rx = OtlpReceiver(port=args.port, keep=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with rx:
        print(f"ready {rx.port}", flush=True)
        stop.wait()
    print(f"spans {rx.received}", flush=True)


if __name__ == "__main__":
    main()
