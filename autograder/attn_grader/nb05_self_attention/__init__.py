"""Grading side of 05_self_attention: reference, checks and the mistake catalogue."""
