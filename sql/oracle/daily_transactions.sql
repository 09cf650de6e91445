-- Daily transactions job: staging and FINAL tables, Oracle 12c+ (SQL*Plus / SQLcl).
--
-- The job creates these tables itself when they are missing. This file is for DBAs
-- and is checked against the code by tests/integration/test_ddl.py.
--
-- Identifiers are unquoted (Oracle stores them upper-case) and at most 30 bytes, the
-- limit before 12.2. No blank lines inside a statement: SQL*Plus would end it there.
-- Money is NUMBER(13, 2): exact, as the 13 digits of the input with 2 implied decimals.
-- Text is VARCHAR2 with CHAR length semantics. Oracle stores '' as NULL, so blank
-- optional text is NULL on every database.

-- One row per accepted detail record of a run, loaded by the writer workers.
-- No primary key and no index: a (run_id, source_line) key made the load 1.6x slower.
-- The reconciliation, not a constraint, proves every line arrived exactly once.
CREATE TABLE stg_transactions (
    run_id       VARCHAR2(50 CHAR) NOT NULL,
    source_line  NUMBER(19)        NOT NULL,  -- 1-based line number in the input file
    worker_id    INTEGER           NOT NULL,  -- the processor worker that read the line
    txn_id       VARCHAR2(16 CHAR) NOT NULL,
    account_id   VARCHAR2(10 CHAR) NOT NULL,  -- digits, text so leading zeros survive
    txn_date     DATE              NOT NULL,
    amount       NUMBER(13, 2)     NOT NULL,
    currency     CHAR(3) NOT NULL,
    description  VARCHAR2(40 CHAR)            -- trailing spaces trimmed, blank is NULL
);

-- The FINAL table: one row per TXN_ID. A later record of the same key wins.
CREATE TABLE transactions (
    txn_id       VARCHAR2(16 CHAR) NOT NULL,
    account_id   VARCHAR2(10 CHAR) NOT NULL,
    txn_date     DATE              NOT NULL,
    amount       NUMBER(13, 2)     NOT NULL,
    currency     CHAR(3) NOT NULL,
    description  VARCHAR2(40 CHAR),
    last_run_id  VARCHAR2(50 CHAR) NOT NULL,  -- the run that last inserted or updated it
    updated_ts   TIMESTAMP         NOT NULL,  -- UTC
    CONSTRAINT pk_transactions PRIMARY KEY (txn_id)
);

-- The staging_to_final checks count and sum the FINAL rows of one run among millions:
-- a range of this index (not of (last_run_id, amount): ordered by amount, each row
-- the MERGE writes lands at a random place in it, twice the MERGE's time).
CREATE INDEX ix_transactions_run ON transactions (last_run_id);
