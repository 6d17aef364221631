"""Grading side of 06_transformer_encoder: reference, checks and the mistake catalogue."""
