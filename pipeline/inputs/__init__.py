"""Input formats: one module per format family, behind one InputFormat contract.

To add a format, write one module here with a subclass of InputFormat (contract.py):
``from_config`` builds it from the job's TOML, ``plan`` checks the header and trailer and
cuts the details into byte ranges on record boundaries, ``read`` parses a range into
DetailBatches, ``read_keys`` gives `explain` the keys of records. Then add one line to
FORMATS in registry.py: the input.format name and the class. Nothing else changes: the
config, the processors, `validate`, `explain` and the run only call the contract.
A text format can subclass TextLines (lines.py) and give only its parser and control
records; the vectorized parsers themselves live in pipeline.layouts.
"""

from pipeline.inputs.contract import InputFormat, KeysUnreadable, join_key
from pipeline.inputs.registry import FORMATS, format_class, input_keys

__all__ = ["FORMATS", "InputFormat", "KeysUnreadable", "format_class", "input_keys", "join_key"]
