"""Shared bits of the benchmarks: a local Ray, a throwaway runtime, a bare round trip to compare
with, percentiles, and the JSON last line."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from pydantic import SecretStr

import omoi_ray as omoi


def start_ray(num_cpus: int = 2) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, namespace="omoi-bench",
             object_store_memory=200 * 1024 * 1024)


def runtime(**overrides: Any) -> tuple[omoi.Runtime, str]:
    """A fresh runtime: PostgreSQL when OMOI_DATABASE_URL is set (a fresh schema), else SQLite."""
    home = Path(tempfile.mkdtemp(prefix="omoi-bench-"))
    url = os.environ.get("OMOI_DATABASE_URL")
    backend = "sqlite"
    if url:
        url, backend = fresh_pg_schema(url), "postgresql"
    settings = omoi.Settings(home=home, database_url=SecretStr(url) if url else None,
                             namespace=f"bench-{uuid.uuid4().hex[:6]}", **overrides)
    return omoi.connect(settings, migrate=True), backend


def fresh_pg_schema(url: str) -> str:
    import sqlalchemy as sa

    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix):]
    name = f"omoi_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    engine.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"


def drop_pg_schema(url: str) -> None:
    import sqlalchemy as sa

    if "%3D" not in url:
        return
    name = url.rsplit("%3D", 1)[1]
    engine = sa.create_engine(url.split("?")[0], isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


def finish(rt: omoi.Runtime, result: dict[str, Any]) -> None:
    rt.shutdown(agents_timeout=5.0)
    if rt.settings.database_url is not None:
        drop_pg_schema(rt.settings.database_url.get_secret_value())
    ray.shutdown()
    print(json.dumps(result))


def noop(task: Any, ctx: Any) -> None:
    return None


class Stopwatch:
    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


@ray.remote(num_cpus=0)
class Echo:
    """A bare actor: its ``ping`` round trip is the yardstick latencies are divided by."""

    def ping(self) -> int:
        return 1


def median_rtt_ms(actor: Any, n: int) -> float:
    """Median of ``n`` sequential ``ping`` round trips to ``actor`` (after one warm-up), in ms."""
    ray.get(actor.ping.remote())
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        ray.get(actor.ping.remote())
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by rank (NaN when there are none)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
