"""Files in, probabilities out: decoding, the spec's preprocessing steps, onnxruntime, the
answers; the worker's memory and threads, and the models it serves by name. No HTTP, no
BentoML: its errors carry the status the HTTP layer answers them with."""
