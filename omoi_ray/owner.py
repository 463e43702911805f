"""This process's runtime as the owner of a database: its namespace and its Ray cluster's id.

The cluster id is the GCS cluster id Ray gives a cluster when its head starts; every driver and
worker process of that cluster reads the same one (``ray.init`` must have run).
"""

from __future__ import annotations

from omoi_ray.core.ownership import OwnerId


def cluster_id() -> str:
    """The id of the Ray cluster this process is connected to (hex)."""
    from ray._private import worker

    return worker.global_worker.node.cluster_id.hex()


def runtime_owner(namespace: str) -> OwnerId:
    """The owner identity of the runtime in ``namespace`` on this Ray cluster."""
    return OwnerId(namespace, cluster_id())
