"""A Ray address, checked before anything joins it.

Rules:
- An address is ``host:port`` (the head node's GCS port), ``ray://host:port`` (Ray Client),
  ``auto`` or ``local``; anything else is refused naming where it came from.
- ``ray.init`` on a port where nobody answers, or where something other than Ray answers,
  retries for minutes while it logs. So for ``host:port`` forms a connection is opened first
  (``CONNECT_TIMEOUT_S``) and the server must answer HTTP/2's opening as Ray's gRPC servers do,
  and (``host:port``) not refuse Ray's GCS service as unimplemented; otherwise
  ``ConfigurationError`` says so at once. ``auto`` and ``local`` are left to Ray.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from omoi_ray.errors import ConfigurationError

#: seconds to open a connection to a Ray address (and to hear its gRPC server) before giving up
CONNECT_TIMEOUT_S = 3.0
#: ``host:port`` or ``ray://host:port`` (host: a name, an IPv4 address or an IPv6 one in brackets)
ADDRESS = re.compile(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})")
_LEFT_TO_RAY = ("auto", "local")


def parse(text: str) -> str:
    """``text`` stripped, if it is a Ray address (see the module rules); raises ``ValueError``."""
    text = text.strip()
    if text in _LEFT_TO_RAY:
        return text
    match = ADDRESS.fullmatch(text)
    if match is None or not 0 < int(match[2]) < 65536:
        raise ValueError(
            f"{text!r} is not a Ray address: use host:port (the head node's GCS port, e.g. "
            "10.0.0.5:6379), ray://host:port or auto"
        )
    return text


def check_reachable(address: str) -> None:
    """Raise ``ConfigurationError`` unless a Ray gRPC server answers at ``address`` within
    ``CONNECT_TIMEOUT_S`` seconds (``auto`` and ``local`` are not checked)."""
    match = ADDRESS.fullmatch(address)
    if match is None:
        return
    try:
        with socket.create_connection((match[1].strip("[]"), int(match[2])), timeout=CONNECT_TIMEOUT_S) as sock:
            grpc = _speaks_grpc(sock)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigurationError(f"cannot reach Ray at {address}: {reason}") from None
    if not grpc or (not address.startswith("ray://") and not _serves_ray_gcs(match[1], int(match[2]))):
        raise ConfigurationError(f"{address} does not answer as a Ray cluster (no Ray GCS server there): give "
                                 "the head node's GCS port, e.g. host:6379, or ray://host:10001 for Ray Client")


def _serves_ray_gcs(host: str, port: int) -> bool:
    """False when the gRPC server at ``host:port`` does not implement Ray's GCS (another gRPC
    service, Ray Client's port given without ``ray://``, a proxy): ``ray.init`` would retry
    against it for half a minute, logging every second. Any other answer, silence included, is
    left to ``ray.init``."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=CONNECT_TIMEOUT_S)
        except grpc.RpcError as exc:
            return exc.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


def _speaks_grpc(sock: Any) -> bool:
    """Whether the server on ``sock`` answers HTTP/2's opening (as Ray's gRPC servers do) with a
    SETTINGS frame. False on silence (``CONNECT_TIMEOUT_S``) or any other answer."""
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    head = b""
    try:
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except (TimeoutError, ConnectionError):
        return False
    return head[3] == 4  # the frame type of SETTINGS
