-- Audit tables created by an earlier version (before the job lock's fencing token, the
-- run's host and pid, the stage times, the job instance's business date and overrides,
-- the staging proof, the hash total's figures, the code page and copybook read): adds the
-- columns, keeps every row. Run it once: the job refuses to start (exit 2, naming this
-- file) while a column is missing. A table that already has some of them: run only the
-- statements of the columns it lacks. RECON_EVIDENCE, a table of its own, needs nothing
-- here: the job creates it when it is missing (its DDL is in audit.sql).
ALTER TABLE job_lock ADD COLUMN run_id VARCHAR(50);
ALTER TABLE batch_run ADD COLUMN host VARCHAR(255);
ALTER TABLE batch_run ADD COLUMN pid INTEGER;
ALTER TABLE batch_run ADD COLUMN plan_ms BIGINT;
ALTER TABLE batch_run ADD COLUMN load_ms BIGINT;
ALTER TABLE batch_run ADD COLUMN checks_ms BIGINT;
ALTER TABLE batch_run ADD COLUMN merge_ms BIGINT;
ALTER TABLE batch_run ADD COLUMN audit_ms BIGINT;
ALTER TABLE batch_run ADD COLUMN business_date DATE;
ALTER TABLE batch_run ADD COLUMN rerun CHAR(1);
ALTER TABLE batch_run ADD COLUMN allow_older CHAR(1);
ALTER TABLE batch_run ADD COLUMN staging_proven_ts TIMESTAMP;
ALTER TABLE batch_run ADD COLUMN trailer_hash BIGINT;
ALTER TABLE batch_run ADD COLUMN read_hash BIGINT;
ALTER TABLE batch_run ADD COLUMN accepted_hash BIGINT;
ALTER TABLE batch_run ADD COLUMN unhashed_cnt BIGINT;
ALTER TABLE batch_run ADD COLUMN code_page VARCHAR(10);
ALTER TABLE batch_run ADD COLUMN copybook_sha256 CHAR(64);
