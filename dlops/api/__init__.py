"""What clients see beyond /predict: the Open Inference Protocol (``v2``), the page at /ui and
the API page with its OpenAPI schema."""
