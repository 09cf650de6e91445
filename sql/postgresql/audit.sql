-- Tables shared by every job: RECON_AUDIT, RECON_WORKER_AUDIT, BATCH_RUN, JOB_LOCK.
-- PostgreSQL 15+.
--
-- The job creates these tables itself when they are missing; this file is for DBAs
-- and is checked against the code by tests/integration/test_ddl.py.
--
-- Counts are BIGINT: the designers' INTEGER overflows at 2**31 records.
-- Amounts are NUMERIC(38, 6): exact, and scale 6 holds any job's amounts.
-- Timestamps are TIMESTAMP (without time zone) and hold UTC.

-- One row per reconciliation check of a run, passed or failed.
CREATE TABLE recon_audit (
    recon_id         INTEGER        GENERATED ALWAYS AS IDENTITY,
    run_id           VARCHAR(50)    NOT NULL,
    check_name       VARCHAR(50)    NOT NULL,
    expected_cnt     BIGINT         NOT NULL,
    actual_cnt       BIGINT         NOT NULL,
    passed           CHAR(1)        CONSTRAINT ck_recon_passed CHECK (passed IN ('Y', 'N')),
    discrepancy      BIGINT         NOT NULL,
    check_ts         TIMESTAMP      NOT NULL,
    expected_amt     NUMERIC(38, 6),           -- amount checks only
    actual_amt       NUMERIC(38, 6),
    discrepancy_amt  NUMERIC(38, 6),
    detail           VARCHAR(1000),            -- why a check failed or could not be evaluated
    CONSTRAINT pk_recon_audit PRIMARY KEY (recon_id)
);

CREATE INDEX ix_recon_audit_run ON recon_audit (run_id);

-- One row per worker process of a run: what it did and how it ended.
CREATE TABLE recon_worker_audit (
    run_id             VARCHAR(50)    NOT NULL,
    worker_id          INTEGER        NOT NULL,
    worker_type        VARCHAR(10)    NOT NULL,  -- 'processor' or 'writer'
    records_processed  BIGINT         NOT NULL,
    errors_count       BIGINT         NOT NULL,
    amount             NUMERIC(38, 6) NOT NULL,
    start_ts           TIMESTAMP,
    end_ts             TIMESTAMP,
    state              VARCHAR(20)    NOT NULL,  -- done, failed, killed, lost, running, ...
    exit_code          INTEGER,                  -- the process exit code (negative: a signal)
    pid                INTEGER,
    CONSTRAINT pk_recon_worker_audit PRIMARY KEY (run_id, worker_id),
    CONSTRAINT ck_worker_type CHECK (worker_type IN ('processor', 'writer'))
);

-- One row per run, written when the run starts and completed when it ends.
CREATE TABLE batch_run (
    run_id        VARCHAR(50)   NOT NULL,
    job_name      VARCHAR(50)   NOT NULL,
    input_path    VARCHAR(1000) NOT NULL,
    input_sha256  CHAR(64),                 -- hex SHA-256 of the input file
    status        VARCHAR(20)   NOT NULL,   -- RUNNING, SUCCEEDED, FAILED_RECON, ...
    start_ts      TIMESTAMP     NOT NULL,
    end_ts        TIMESTAMP,
    exit_code     INTEGER,                  -- 0 ok, 1 recon failed, 2 bad input, 3 runtime
    message       VARCHAR(1000),
    staging_purged CHAR(1),                 -- 'Y' once a later run purged its staging rows
    trailer_cnt   BIGINT,                   -- the trailer's count and amount, and the load's totals:
    trailer_amt   NUMERIC(38, 6),           -- stored once staging is loaded, so `run --resume` can
    read_cnt      BIGINT,                   -- finish the run from staging without its input file
    rejected_cnt  BIGINT,
    written_cnt   BIGINT,
    read_amt      NUMERIC(38, 6),
    accepted_amt  NUMERIC(38, 6),
    unreadable_cnt BIGINT,
    trailer_hash  BIGINT,                   -- with a trailer hash total: the trailer's, the sums over
    read_hash     BIGINT,                   -- the records read and accepted (within the trailer
    accepted_hash BIGINT,                   -- field's digits), the records whose field was unreadable
    unhashed_cnt  BIGINT,
    resumed_ts    TIMESTAMP,                -- the last `run --resume` of this run
    staging_proven_ts TIMESTAMP,          -- when the run proved staging held the processors' rows
    host          VARCHAR(255),             -- where the run's process lives, and its pid:
    pid           INTEGER,                  -- ABENDED only once that process is gone
    -- how long each stage took, in milliseconds (pipeline.stages): where a night's time went
    plan_ms       BIGINT,
    load_ms       BIGINT,
    checks_ms     BIGINT,
    merge_ms      BIGINT,
    audit_ms      BIGINT,
    -- the job instance: the header's business date, and 'Y' where the operator overrode a
    -- refusal (run --rerun: the same file again; run --allow-older: an earlier date)
    business_date DATE,
    rerun         CHAR(1),
    allow_older   CHAR(1),
    -- how the input was read: its code page and the SHA-256 of its copybook (mainframe
    -- jobs): a file read with the wrong EBCDIC code page still balances
    code_page     VARCHAR(10),
    copybook_sha256 CHAR(64),
    CONSTRAINT pk_batch_run PRIMARY KEY (run_id)
);

-- One row per job name, inserted by the job's first run. A run locks its job's row
-- (SELECT ... FOR UPDATE NOWAIT) until it ends, so a second run of the same job is
-- refused while runs of different jobs proceed; the lock dies with its session.
CREATE TABLE job_lock (
    job_name  VARCHAR(50) NOT NULL,
    run_id    VARCHAR(50),  -- the run holding the lock (fencing token)
    CONSTRAINT pk_job_lock PRIMARY KEY (job_name)
);

-- The rows behind a failed column check (processed_to_staging_columns,
-- staging_to_final_columns), as found when it failed: the first 1,000 differing rows per
-- check, one row per differing column, with both values as text (NULL: the value is
-- NULL; column '(row)': the row is missing on one side). `pipeline explain` shows them.
CREATE TABLE recon_evidence (
    run_id          VARCHAR(50) NOT NULL,
    seq             INTEGER NOT NULL,
    check_name      VARCHAR(50) NOT NULL,
    source_line     BIGINT,
    key_value       VARCHAR(200),
    column_name     VARCHAR(128) NOT NULL,
    expected_value  VARCHAR(1000),
    actual_value    VARCHAR(1000),
    CONSTRAINT pk_recon_evidence PRIMARY KEY (run_id, seq)
);
