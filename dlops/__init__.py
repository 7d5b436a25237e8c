"""dlops: serve an ONNX image classifier with BentoML."""

# pyproject.toml's version, here too because a Bento ships the package without its metadata;
# tests/test_docs.py keeps the two equal. The API page shows it.
__version__ = "0.1.0"
