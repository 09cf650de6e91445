-- Tables shared by every job: RECON_AUDIT, RECON_WORKER_AUDIT, BATCH_RUN, JOB_LOCK.
-- Oracle 12c+ (identity columns), SQL*Plus / SQLcl.
--
-- The job creates these tables itself when they are missing. This file is for DBAs
-- and is checked against the code by tests/integration/test_ddl.py.
--
-- Counts are NUMBER(19), a 64-bit BIGINT: the INTEGER of the original design overflows at 2**31.
-- Amounts are NUMBER(38, 6): exact, and scale 6 holds the amounts of any job.
-- Oracle has no BOOLEAN column type (before 23ai): PASSED is CHAR(1) 'Y'/'N' with a CHECK.
-- Timestamps are TIMESTAMP and hold UTC. No blank lines inside a statement (SQL*Plus).

-- One row per reconciliation check of a run, passed or failed.
CREATE TABLE recon_audit (
    recon_id         INTEGER GENERATED ALWAYS AS IDENTITY,
    run_id           VARCHAR2(50 CHAR)   NOT NULL,
    check_name       VARCHAR2(50 CHAR)   NOT NULL,
    expected_cnt     NUMBER(19)          NOT NULL,
    actual_cnt       NUMBER(19)          NOT NULL,
    passed           CHAR(1) CONSTRAINT ck_recon_passed CHECK (passed IN ('Y', 'N')),
    discrepancy      NUMBER(19)          NOT NULL,
    check_ts         TIMESTAMP           NOT NULL,
    expected_amt     NUMBER(38, 6),                -- amount checks only
    actual_amt       NUMBER(38, 6),
    discrepancy_amt  NUMBER(38, 6),
    detail           VARCHAR2(1000 CHAR),          -- why a check failed or was unprovable
    CONSTRAINT pk_recon_audit PRIMARY KEY (recon_id)
);

CREATE INDEX ix_recon_audit_run ON recon_audit (run_id);

-- One row per worker process of a run: what it did and how it ended.
CREATE TABLE recon_worker_audit (
    run_id             VARCHAR2(50 CHAR) NOT NULL,
    worker_id          INTEGER           NOT NULL,
    worker_type        VARCHAR2(10 CHAR) NOT NULL,  -- 'processor' or 'writer'
    records_processed  NUMBER(19)        NOT NULL,
    errors_count       NUMBER(19)        NOT NULL,
    amount             NUMBER(38, 6)     NOT NULL,
    start_ts           TIMESTAMP,
    end_ts             TIMESTAMP,
    state              VARCHAR2(20 CHAR) NOT NULL,  -- done, failed, killed, lost, ...
    exit_code          INTEGER,                     -- process exit code (negative: signal)
    pid                INTEGER,
    CONSTRAINT pk_recon_worker_audit PRIMARY KEY (run_id, worker_id),
    CONSTRAINT ck_worker_type CHECK (worker_type IN ('processor', 'writer'))
);

-- One row per run, written when the run starts and completed when it ends.
CREATE TABLE batch_run (
    run_id        VARCHAR2(50 CHAR)   NOT NULL,
    job_name      VARCHAR2(50 CHAR)   NOT NULL,
    input_path    VARCHAR2(1000 CHAR) NOT NULL,
    input_sha256  CHAR(64),                       -- hex SHA-256 of the input file
    status        VARCHAR2(20 CHAR)   NOT NULL,   -- RUNNING, SUCCEEDED, FAILED_RECON, ...
    start_ts      TIMESTAMP           NOT NULL,
    end_ts        TIMESTAMP,
    exit_code     INTEGER,                        -- 0 ok, 1 recon, 2 bad input, 3 runtime
    message       VARCHAR2(1000 CHAR),
    staging_purged CHAR(1),                   -- 'Y' once a later run purged its staging rows
    trailer_cnt   NUMBER(19),               -- the trailer's count and amount, and the load's totals:
    trailer_amt   NUMBER(38, 6),            -- stored once staging is loaded, so `run --resume` can
    read_cnt      NUMBER(19),               -- finish the run from staging without its input file
    rejected_cnt  NUMBER(19),
    written_cnt   NUMBER(19),
    read_amt      NUMBER(38, 6),
    accepted_amt  NUMBER(38, 6),
    unreadable_cnt NUMBER(19),
    trailer_hash  NUMBER(19),               -- with a trailer hash total: the trailer's, the sums over
    read_hash     NUMBER(19),               -- the records read and accepted (within the trailer
    accepted_hash NUMBER(19),               -- field's digits), the records whose field was unreadable
    unhashed_cnt  NUMBER(19),
    resumed_ts    TIMESTAMP,                -- the last `run --resume` of this run
    staging_proven_ts TIMESTAMP,          -- when the run proved staging held the processors' rows
    host          VARCHAR2(255 CHAR),             -- where the run's process lives, and its pid:
    pid           INTEGER,                  -- ABENDED only once that process is gone
    -- how long each stage took, in milliseconds (pipeline.stages): where a night's time went
    plan_ms       NUMBER(19),
    load_ms       NUMBER(19),
    checks_ms     NUMBER(19),
    merge_ms      NUMBER(19),
    audit_ms      NUMBER(19),
    -- the job instance: the header's business date, and 'Y' where the operator overrode a
    -- refusal (run --rerun: the same file again; run --allow-older: an earlier date)
    business_date DATE,
    rerun         CHAR(1),
    allow_older   CHAR(1),
    -- how the input was read: its code page and the SHA-256 of its copybook (mainframe
    -- jobs): a file read with the wrong EBCDIC code page still balances
    code_page     VARCHAR2(10 CHAR),
    copybook_sha256 CHAR(64),
    CONSTRAINT pk_batch_run PRIMARY KEY (run_id)
);

-- One row per job name, inserted by the first run of the job. A run locks the row
-- of its job (SELECT ... FOR UPDATE NOWAIT) until it ends, so a second run of the same job is
-- refused while runs of different jobs proceed. The lock dies with its session.
CREATE TABLE job_lock (
    job_name  VARCHAR2(50 CHAR) NOT NULL,
    run_id    VARCHAR2(50 CHAR),  -- the run holding the lock (fencing token)
    CONSTRAINT pk_job_lock PRIMARY KEY (job_name)
);

-- The rows behind a failed column check (processed_to_staging_columns,
-- staging_to_final_columns), as found when it failed: the first 1,000 differing rows per
-- check, one row per differing column, with both values as text (NULL: the value is
-- NULL; column '(row)': the row is missing on one side). `pipeline explain` shows them.
CREATE TABLE recon_evidence (
    run_id          VARCHAR2(50 CHAR) NOT NULL,
    seq             INTEGER NOT NULL,
    check_name      VARCHAR2(50 CHAR) NOT NULL,
    source_line     NUMBER(19),
    key_value       VARCHAR2(200 CHAR),
    column_name     VARCHAR2(128 CHAR) NOT NULL,
    expected_value  VARCHAR2(1000 CHAR),
    actual_value    VARCHAR2(1000 CHAR),
    CONSTRAINT pk_recon_evidence PRIMARY KEY (run_id, seq)
);
