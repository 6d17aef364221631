"""Grading side of 07_transformer_decoder: reference, checks, the mistake catalogue and the
correct variants."""
