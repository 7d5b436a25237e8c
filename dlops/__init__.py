"""dlops: serve an ONNX image classifier with BentoML."""
