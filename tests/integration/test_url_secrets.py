"""A database URL carries secrets in more places than ``user:password@``: query parameters
the drivers accept (libpq's ``password``, ``sslpassword``; python-oracledb's
``wallet_password``, ``access_token``...) and URLs or conninfo strings nested in a value.
Wherever the job shows a URL (the summary's ``database`` line, summary.txt, reports,
error messages) every one of them is masked."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from pipeline.db.engine import database_errors, mask_secrets, safe_url
from pipeline.errors import DatabaseFailure
from pipeline.generate import generate_file
from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(180)

PW = "S3cr3tPw"  # every secret below contains it, so one check finds any of them

# (URL, what must still show): each form a driver takes a secret in
FORMS = [
    ("postgresql+psycopg://u:S3cr3tPw1@h/db", "u:***@h/db"),
    ("postgresql+psycopg://u@h/db?password=S3cr3tPw2&connect_timeout=5",
     "connect_timeout=5&password=***"),
    ("postgresql+psycopg://u@h/db?sslpassword=S3cr3tPw3&sslkey=%2Fk.pem", "sslpassword=***"),
    ("postgresql+psycopg2://u@h/db?passwd=S3cr3tPw4", "passwd=***"),
    ("postgresql+psycopg://u@h/db?PWD=S3cr3tPw5", "PWD=***"),
    ("postgresql+psycopg://u@h/db?password=S3cr3tPw6&password=S3cr3tPw7", "password=***"),
    ("postgresql+psycopg://u@h/db?dbname=postgresql%3A%2F%2Fv%3AS3cr3tPw8%40h2%2Fd",
     "dbname=postgresql%3A%2F%2Fv%3A***%40h2%2Fd"),
    ("postgresql+psycopg://u@h/db?options=password%3DS3cr3tPw9", "options=password%3D***"),
    ("postgresql+psycopg://u@h/password%3DS3cr3tPwA%20host%3Dh2", "password%3D***"),
    ("oracle+oracledb://u:S3cr3tPwB@h:1521/?service_name=ORCL&wallet_password=S3cr3tPwC"
     "&access_token=S3cr3tPwD&newpassword=S3cr3tPwE", "service_name=ORCL"),
    ("oracle+oracledb://u@h/?https_proxy=http%3A%2F%2Fp%3AS3cr3tPwF%40proxy%3A80",
     "https_proxy=http%3A%2F%2Fp%3A***%40proxy"),
    ("mysql+pymysql://u@h/db?client_secret=S3cr3tPwG&api_key=S3cr3tPwH", "api_key=***"),
]


@pytest.mark.parametrize(("url", "shown"), FORMS, ids=[f"form{i}" for i in range(len(FORMS))])
def test_safe_url_masks_every_secret_a_url_carries(url: str, shown: str) -> None:
    rendered = safe_url(url)

    assert PW not in rendered and "***" in rendered
    assert shown in rendered, rendered
    # a driver's message quoting any of them is masked too
    assert PW not in mask_secrets(f"bad values {make_url(url).query} in {url}", url)


def test_a_sqlite_path_is_shown_as_it_is() -> None:
    assert safe_url("sqlite:////data/pass=word/x.db") == "sqlite:////data/pass%3Dword/x.db"


def test_a_driver_error_names_the_database_without_its_secrets() -> None:
    url = make_url("postgresql+psycopg://u@h/db?password=S3cr3tPwQ&sslpassword=S3cr3tPwR")
    with pytest.raises(DatabaseFailure) as failure, database_errors(url, "testing"):
        raise OperationalError("SELECT 1", {}, Exception(
            "connection option password=S3cr3tPwQ sslpassword='S3cr3tPwR' refused"))

    said = str(failure.value)
    assert PW not in said and "password=***" in said, said


@pytest.fixture
def pg_with_query_password(pg_url: str) -> str:
    """The test database's URL with its credentials as query parameters (the server may
    trust 127.0.0.1: what matters is where the URL's secrets travel)."""
    url = make_url(pg_url)
    return url.update_query_dict({"password": f"{PW}-{secrets.token_hex(6)}",
                                  "sslpassword": f"{PW}-{secrets.token_hex(6)}"}
                                 ).render_as_string(hide_password=False)


def every_file(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
@pytest.mark.postgresql
def test_a_query_password_is_shown_nowhere(tmp_path: Path,
                                           pg_with_query_password: str) -> None:
    made = generate_file(tmp_path / "in.dat", 300, seed=3)
    url = pg_with_query_password

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(tmp_path, *args, "--db", url, timeout=150)

    ran = cli("run", "--input", str(made.path), "--no-progress")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "sslpassword=***" in ran.stdout  # the database line: named, its secrets masked
    outputs = [cli("report"), cli("report", "--json"), cli("runs"),
               cli("report", "--html", str(tmp_path / "r.html")), cli("explain")]
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    # an error names the database too
    refused = run_cli(tmp_path, "report", "--db", url.replace("/pipeline_test_", "/nowhere_"))
    assert refused.returncode == 3 and "password=***" in refused.stderr, refused.stderr
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            audit = repr([conn.execute(text(f"SELECT * FROM {t}")).all()
                          for t in ("batch_run", "recon_audit", "recon_worker_audit")])
    finally:
        engine.dispose()
    texts = [ran.stdout, ran.stderr, refused.stdout, refused.stderr, every_file(tmp_path),
             audit, *(o.stdout + o.stderr for o in outputs)]
    assert not [t for t in texts if PW in t]
