"""A Ray address is checked before anything joins it: ``ray.init`` on a port where no Ray
answers retries for minutes, so ``connect`` and the CLI refuse such an address at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from omoi_ray.client import address as ray_address
from omoi_ray.errors import ConfigurationError
from tests.conftest import ROOT


@pytest.mark.parametrize("text", ["garbage", "host:0", "host:70000", "http://host:6379", "host:6379\n:1", ""])
def test_a_malformed_address_is_refused(text):
    with pytest.raises(ValueError, match="not a Ray address"):
        ray_address.parse(text)


@pytest.mark.parametrize("text", ["auto", "local", "10.0.0.5:6379", "ray://head:10001", "[::1]:6379", " h:1 "])
def test_well_formed_addresses_are_kept(text):
    assert ray_address.parse(text) == text.strip()


def test_an_address_nobody_listens_on_is_refused():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigurationError, match=f"cannot reach Ray at 127.0.0.1:{port}"):
        ray_address.check_reachable(f"127.0.0.1:{port}")


def test_an_address_where_something_else_answers_is_refused():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:  # a plain HTTP/1 server's answer to anything
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(ConfigurationError, match="does not answer as a Ray cluster"):
            ray_address.check_reachable(f"127.0.0.1:{port}")
    finally:
        thread.join(timeout=10)
        server.close()


@pytest.mark.parametrize("how", ["argument", "RAY_ADDRESS"])
def test_connect_refuses_an_address_where_no_ray_answers_before_starting_anything(how, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMOI_") and k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(ROOT), OMOI_HOME=str(tmp_path), RAY_AUTH_MODE="disabled")
    arg = f"'127.0.0.1:{port}'" if how == "argument" else "None"
    if how == "RAY_ADDRESS":
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    code = (
        "import omoi_ray\n"
        "from omoi_ray.errors import ConfigurationError\n"
        "try:\n"
        f"    omoi_ray.connect(address={arg}, migrate=True)\n"
        "except ConfigurationError as exc:\n"
        "    print('refused:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert f"refused: cannot reach Ray at 127.0.0.1:{port}" in out.stdout, out.stdout + out.stderr
    assert not (tmp_path / "omoi.db").exists()  # refused before the database was created


class _GcsStandIn:
    """An in-test gRPC server answering every call with the given statuses in turn (the last one
    repeated); ``"OK"`` answers as a Ray GCS does (an empty ``GetClusterIdReply``)."""

    def __init__(self, *codes: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import grpc
        from ray.core.generated import gcs_service_pb2

        self.codes = list(codes)
        self.calls = 0

        def answer(_request, context):
            code = self.codes[min(self.calls, len(self.codes) - 1)]
            self.calls += 1
            if code == "OK":
                return gcs_service_pb2.GetClusterIdReply()
            context.abort(getattr(grpc.StatusCode, code), "not a Ray GCS")

        class Handler(grpc.GenericRpcHandler):
            def service(self, _details):
                return grpc.unary_unary_rpc_method_handler(
                    answer, response_serializer=gcs_service_pb2.GetClusterIdReply.SerializeToString)

        self.server = grpc.server(ThreadPoolExecutor(max_workers=2), handlers=[Handler()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def __enter__(self) -> _GcsStandIn:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.stop(None)


@pytest.mark.parametrize("code", ["UNIMPLEMENTED", "PERMISSION_DENIED", "UNAUTHENTICATED", "UNAVAILABLE",
                                  "INTERNAL", "NOT_FOUND"])
def test_a_grpc_server_refusing_rays_gcs_call_is_refused_naming_the_status(code, monkeypatch):
    monkeypatch.setattr(ray_address, "GCS_STARTING_S", 0.5)  # UNAVAILABLE is asked again this long
    with _GcsStandIn(code) as server:
        with pytest.raises(ConfigurationError) as info:
            ray_address.check_reachable(f"127.0.0.1:{server.port}")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"127.0.0.1:{server.port} does not answer as a Ray cluster")
    assert f"answered {code}" in message


def test_a_gcs_answering_unavailable_while_it_starts_is_accepted_once_it_answers():
    with _GcsStandIn("UNAVAILABLE", "UNAVAILABLE", "OK") as server:
        ray_address.check_reachable(f"127.0.0.1:{server.port}")  # no refusal
        assert server.calls == 3


def test_a_server_answering_rays_gcs_call_is_accepted():
    with _GcsStandIn("OK") as server:
        ray_address.check_reachable(f"127.0.0.1:{server.port}")
