"""The machine the figures were measured on."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from importlib import metadata
from typing import Any

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def postgres_version(url: str | None) -> str:
    if not url:
        return "not used"
    try:
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar_one())
        engine.dispose()
        return version
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        return f"unreachable ({str(exc).splitlines()[0][:80]})"


def describe(pg_url: str | None) -> dict[str, Any]:
    import numpy

    return {
        "cpu": cpu_model(),
        "logical cpus": os.cpu_count(),
        "cpus usable": len(os.sched_getaffinity(0)),
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(pg_url),
        "sqlalchemy": _version("sqlalchemy"),
        "psycopg": _version("psycopg"),
        "pandas": _version("pandas"),
        "multiprocess": _version("multiprocess"),
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
