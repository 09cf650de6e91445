"""Job configurations shipped inside the package (``python -m pipeline run`` uses these)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_JOB = "daily_transactions"


def shipped_config(name: str = DEFAULT_JOB) -> Path:
    """Path of a job config that ships with the package."""
    return Path(str(resources.files(__package__).joinpath(f"{name}.toml")))
