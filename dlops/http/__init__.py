"""ASGI plumbing in front of BentoML's app: connection and header limits, the deadline, the
graceful drain, the API key, JSON errors, reading uploads, and the direct prediction routes."""
