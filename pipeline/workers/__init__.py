"""Processor and writer worker processes, and the pool that starts and supervises them."""
