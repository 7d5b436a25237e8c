"""Benchmark harness: dlops against the seed article's FastAPI app (`python -m bench.run`)."""
