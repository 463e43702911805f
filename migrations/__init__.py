"""Alembic migrations for omoi-ray: one linear history, runnable on SQLite and PostgreSQL.

Run them with ``omoi-ray db upgrade`` (or ``omoi_ray.store.migrate.upgrade(url)``).
"""
