"""Record layouts defined as data, and the parsers that apply them to batches of records."""
