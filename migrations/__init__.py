"""Numbered, idempotent data migrations (`NNNN_name.py`, each with `apply(context)`)."""
