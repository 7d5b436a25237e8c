"""Recording stand-ins for the heroku, docker and podman CLIs (no cloud or engine is reachable).

Each call appends one JSON line to $FAKE_LOG: the tool, its arguments, what it read on stdin
and the environment variables that change how a build behaves. Environment switches make them
answer like a broken set-up: FAKE_HEROKU_LOGGED_IN=0 (auth:whoami fails),
FAKE_REGISTRY_LOGIN=0 (`login` is refused), FAKE_DOCKER_DAEMON=0 (no daemon answers),
FAKE_DOCKER_BUILDX=0 (no buildx plugin).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FAKE_TOKEN = "fake-heroku-api-token"
RECORDED_ENV = ("DOCKER_BUILDKIT",)


def switched_off(name: str) -> bool:
    return os.environ.get(name, "1") == "0"


def heroku(args: list[str]) -> int:
    command = args[0] if args else ""
    if command == "auth:whoami":
        if switched_off("FAKE_HEROKU_LOGGED_IN"):
            print(" ›   Error: not logged in", file=sys.stderr)
            return 100
        print("dev@example.com")
    elif command == "auth:token":
        print(FAKE_TOKEN)
    elif command == "apps:info":
        app = args[args.index("-a") + 1]
        print(f"web_url=https://{app}-0a1b2c3d4e5f.herokuapp.com/")
    elif command == "container:release":
        print("Releasing images web to the app... done")
    return 0


def engine(name: str, args: list[str]) -> int:
    command = args[:2] if args[:1] == ["buildx"] else args[:1]
    if command == ["version"]:
        if name == "docker" and switched_off("FAKE_DOCKER_DAEMON"):
            print("Cannot connect to the Docker daemon. Is the daemon running?", file=sys.stderr)
            return 1
        # bentoml's health check asks for {{json .Server.Version}} and parses the quotes.
        print('"28.2.2"' if "json" in " ".join(args) else "28.2.2")
    elif command == ["buildx", "version"] and switched_off("FAKE_DOCKER_BUILDX"):
        print(f"{name}: 'buildx' is not a {name} command.", file=sys.stderr)
        return 1
    elif command == ["login"] and switched_off("FAKE_REGISTRY_LOGIN"):
        print("Error response from daemon: unauthorized", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    tool = Path(sys.argv[0]).name
    args = sys.argv[1:]
    stdin = sys.stdin.read() if "--password-stdin" in args else None
    record = {
        "tool": tool,
        "args": args,
        "stdin": stdin,
        "env": {name: os.environ[name] for name in RECORDED_ENV if name in os.environ},
    }
    with open(os.environ["FAKE_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")
    return heroku(args) if tool == "heroku" else engine(tool, args)


if __name__ == "__main__":
    sys.exit(main())
