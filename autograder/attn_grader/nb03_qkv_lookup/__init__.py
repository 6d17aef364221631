"""Grading side of 03_qkv_lookup: references, checks and the mistake catalogue."""
