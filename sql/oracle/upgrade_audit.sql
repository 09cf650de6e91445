-- Audit tables created by an earlier version (before the job lock's fencing token, the
-- run's host and pid, the stage times, the job instance's business date and overrides,
-- the staging proof, the hash total's figures, the code page and copybook read): adds the
-- columns, keeps every row. Run it once: the job refuses to start (exit 2, naming this
-- file) while a column is missing. A table that already has some of them: run only the
-- statements of the columns it lacks. RECON_EVIDENCE, a table of its own, needs nothing
-- here: the job creates it when it is missing (its DDL is in audit.sql).
ALTER TABLE job_lock ADD (run_id VARCHAR2(50 CHAR));
ALTER TABLE batch_run ADD (host VARCHAR2(255 CHAR), pid INTEGER, plan_ms NUMBER(19),
                           load_ms NUMBER(19), checks_ms NUMBER(19), merge_ms NUMBER(19),
                           audit_ms NUMBER(19));
ALTER TABLE batch_run ADD (business_date DATE, rerun CHAR(1), allow_older CHAR(1));
ALTER TABLE batch_run ADD (staging_proven_ts TIMESTAMP);
ALTER TABLE batch_run ADD (trailer_hash NUMBER(19), read_hash NUMBER(19),
                           accepted_hash NUMBER(19), unhashed_cnt NUMBER(19));
ALTER TABLE batch_run ADD (code_page VARCHAR2(10 CHAR), copybook_sha256 CHAR(64));
