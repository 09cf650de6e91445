-- Daily transactions job: staging and FINAL tables, PostgreSQL 15+ (the load MERGEs).
--
-- The job creates these tables itself when they are missing; this file is for DBAs
-- and is checked against the code by tests/integration/test_ddl.py.
--
-- Money is NUMERIC(13, 2): exact, as the input's 13 digits with 2 implied decimals.
-- Timestamps are TIMESTAMP (without time zone) and hold UTC.

-- One row per accepted detail record of a run, loaded with COPY by the writer workers.
-- No primary key and no index: a (run_id, source_line) key made the load 1.6x slower;
-- the reconciliation, not a constraint, proves every line arrived exactly once.
CREATE TABLE stg_transactions (
    run_id       VARCHAR(50)    NOT NULL,
    source_line  BIGINT         NOT NULL,  -- 1-based line number in the input file
    worker_id    INTEGER        NOT NULL,  -- the processor worker that read the line
    txn_id       VARCHAR(16)    NOT NULL,
    account_id   VARCHAR(10)    NOT NULL,  -- digits, kept as text so leading zeros survive
    txn_date     DATE           NOT NULL,
    amount       NUMERIC(13, 2) NOT NULL,
    currency     CHAR(3) NOT NULL,
    description  VARCHAR(40)               -- trailing spaces trimmed; blank is NULL
) PARTITION BY LIST (run_id);

-- Each run creates its own partition before its load (stg_transactions_r<run id>), so the
-- checks and the MERGE read that run's rows only, and purging a run drops its partition.
-- The DEFAULT partition takes the rows of a run that has none.
CREATE TABLE stg_transactions_default PARTITION OF stg_transactions DEFAULT;

-- The FINAL table: one row per TXN_ID; a later record of the same key wins.
CREATE TABLE transactions (
    txn_id       VARCHAR(16)    NOT NULL,
    account_id   VARCHAR(10)    NOT NULL,
    txn_date     DATE           NOT NULL,
    amount       NUMERIC(13, 2) NOT NULL,
    currency     CHAR(3) NOT NULL,
    description  VARCHAR(40),
    last_run_id  VARCHAR(50)    NOT NULL,  -- the run that last inserted or updated the row
    updated_ts   TIMESTAMP      NOT NULL,  -- UTC
    CONSTRAINT pk_transactions PRIMARY KEY (txn_id)
);

-- The staging_to_final checks count and sum the FINAL rows of one run among millions:
-- a range of this index (not of (last_run_id, amount): ordered by amount, each row
-- the MERGE writes lands at a random place in it, twice the MERGE's time).
CREATE INDEX ix_transactions_run ON transactions (last_run_id);
