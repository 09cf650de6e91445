"""Benchmarks of the batch job: ``python -m benchmarks --quick`` (minutes) or ``--full``.

Every comparison is measured in the same run, alternating, as the median of several
repetitions, and reported as a ratio: absolute times drift on shared machines.
"""
