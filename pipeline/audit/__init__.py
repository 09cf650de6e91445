"""The audit: its schema and conversions (schema), its writer and its reader.

The run statuses it records are values the packages share (recon.values).
"""
