"""Instructor tooling for the attention course: the manifest and the ``attn-course`` CLI."""
