"""This process's runtime as the owner of a database: its namespace and its Ray cluster's id.

The cluster id is the GCS cluster id Ray gives a cluster when its head starts; every driver and
worker process of that cluster reads the same one.
"""

from __future__ import annotations

from omoi_ray.core.ownership import OwnerId


def cluster_id() -> str:
    """The id of the Ray cluster this process is connected to (hex); a process that is not
    connected to Ray (an actor class used in-process, as tests do) is ``no-ray:<host>``."""
    from ray._private import worker

    node = worker.global_worker.node
    if node is None:
        import socket

        return f"no-ray:{socket.gethostname()}"[:64]
    return node.cluster_id.hex()


def runtime_owner(namespace: str) -> OwnerId:
    """The owner identity of the runtime in ``namespace`` on this Ray cluster."""
    return OwnerId(namespace, cluster_id())
