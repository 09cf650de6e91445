"""Reports on past runs, read back from the audit tables: text, JSON and one HTML page.

``pipeline.audit.reader`` reads RECON_AUDIT, RECON_WORKER_AUDIT and BATCH_RUN into a
``RunReport``; these modules only render one.
"""
