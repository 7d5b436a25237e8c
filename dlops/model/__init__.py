"""What a model is: its spec, decided once at import from the graph and what exporters write
beside it (``resolve``), stored with it in the BentoML model store (``store``)."""
