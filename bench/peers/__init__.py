"""dlops beside the servers a user would pick instead (`make bench-peers`, bench/peers/run.py).

Each peer is an app of its own in this folder, run with the Python of its own virtual environment
(``.venv-peers/NAME``, from ``requirements/peers/NAME.txt``): the peers pin versions of FastAPI,
NumPy and others that dlops' stack does not share. Every peer does the same work per image,
:mod:`bench.peers.work`, so that what differs is the server.
"""
