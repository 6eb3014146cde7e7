"""Tidemark's composition root: the ``tidemark`` command line."""
