"""A worker process's models: built from the settings and the BentoML store, kept in step with
the other workers of the same `bentoml serve`, and the server stopped if they cannot load."""
