"""A Ray address, checked before anything joins it.

Rules:
- An address is ``host:port`` (the head node's GCS port), ``ray://host:port`` (Ray Client),
  ``auto`` or ``local``; anything else is refused naming where it came from.
- ``ray.init`` on a port where nobody answers, or where something other than Ray answers,
  retries for minutes while it logs. So for ``host:port`` forms a connection is opened first
  (``CONNECT_TIMEOUT_S``) and the server must answer HTTP/2's opening as Ray's gRPC servers do,
  and (``host:port``) answer Ray's GCS call (``GetClusterId``, with Ray's auth token if one is
  set) with OK; otherwise ``ConfigurationError`` says so at once, naming the address and the gRPC
  status. Any explicit non-OK status (UNIMPLEMENTED, PERMISSION_DENIED, UNAUTHENTICATED, ...) is
  refused at once, except UNAVAILABLE: a Ray GCS that is still starting may answer it briefly, so
  the call is asked again for ``GCS_STARTING_S`` seconds before the address is refused. Silence
  (no answer within ``CONNECT_TIMEOUT_S``, e.g. a loaded GCS) is left to ``ray.init``.
  ``auto`` and ``local`` are left to Ray.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from omoi_ray.errors import ConfigurationError

#: seconds to open a connection to a Ray address (and to hear its gRPC server) before giving up
CONNECT_TIMEOUT_S = 3.0
#: seconds a GCS answering UNAVAILABLE (one that is still starting) is asked again before refusal
GCS_STARTING_S = 5.0
#: seconds between two asks of a GCS that answered UNAVAILABLE
_GCS_RETRY_EVERY_S = 0.25
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
    refusal = None if grpc else "no Ray GCS server there"
    if grpc and not address.startswith("ray://"):
        status = _gcs_refusal(match[1], int(match[2]))
        refusal = None if status is None else f"no Ray GCS server there: its gRPC server answered {status}"
    if refusal is not None:
        raise ConfigurationError(f"{address} does not answer as a Ray cluster ({refusal}): give the head "
                                 "node's GCS port, e.g. host:6379, or ray://host:10001 for Ray Client")


def _gcs_refusal(host: str, port: int) -> str | None:
    """The gRPC status name with which the server at ``host:port`` refuses Ray's GCS call (another
    gRPC service, Ray Client's port given without ``ray://``, a proxy, a server denying access):
    ``ray.init`` would retry against it for minutes, logging every second. None for OK (a Ray
    GCS) and for silence, which is left to ``ray.init``. UNAVAILABLE is asked again for
    ``GCS_STARTING_S`` seconds (a GCS still starting) before it counts as a refusal."""
    import time

    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    deadline = time.monotonic() + GCS_STARTING_S
    metadata = _ray_auth_metadata()
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        while True:
            try:
                stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=CONNECT_TIMEOUT_S,
                                  metadata=metadata)
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return None
                if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
                    time.sleep(_GCS_RETRY_EVERY_S)  # a GCS still starting: ask again until the deadline
                    continue
                return code.name if isinstance(code, grpc.StatusCode) else "an unknown status"
            return None


def _ray_auth_metadata() -> tuple[tuple[str, str], ...]:
    """The gRPC metadata Ray itself sends to a GCS (its auth token, when one is set), so that a
    cluster with token authentication answers the probe as it would answer ``ray.init``."""
    try:
        from ray._private.authentication.grpc_authentication_client_interceptor import (
            _get_authentication_metadata_tuple,
        )

        return tuple(_get_authentication_metadata_tuple())
    except Exception:  # noqa: BLE001 - another Ray version: probe without a token
        return ()


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
