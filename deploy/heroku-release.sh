#!/usr/bin/env bash
# Releases dlops on Heroku in one command: build the image with `make image` for linux/amd64 as a
# Docker v2 schema-2 image, tag it registry.heroku.com/<app>/web, push it, release it.
#
#   make heroku-release HEROKU_APP=my-dlops
#   make heroku-release HEROKU_APP=my-dlops DRY_RUN=1   # prints the commands, runs none of them
#   HEROKU_APP=my-dlops deploy/heroku-release.sh         # the same without make
#   make heroku-release HEROKU_APP=my-dlops MODELS=orientation,binary_classifier_3
#
# The image serves the models it packs, and only those: MODELS (or DLOPS_MODELS) when it is built,
# the first at /predict; unset, DLOPS_MODEL_NAME, else binary_classifier_3. It pins them, versions
# included, in its own DLOPS_MODELS, so the app needs no model setting: a DLOPS_MODELS config var
# only chooses among them, a DLOPS_MODEL_NAME one is ignored, and the repository extension
# (/v2/repository) loads from what the image packs.
#
# Needs the Heroku CLI, logged in (`heroku login`), and docker (with a running daemon) or podman;
# BENTOML_CONTAINERIZE_BACKEND=docker|podman picks one, otherwise docker is preferred.
# Heroku's registry accepts only Docker v2 schema-2 manifests: no OCI manifests and no attestation
# indexes, hence podman's --format docker and buildx's --provenance=false.
set -euo pipefail

app=${HEROKU_APP:-}
dry_run=${DRY_RUN:-}
[[ $dry_run == 0 || $dry_run == false ]] && dry_run=
project_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=dlops:latest
models=${MODELS:-${DLOPS_MODELS:-}}
registry=registry.heroku.com
target=$registry/$app/web
platform=linux/amd64

fail() {
    printf 'heroku-release: %s\n' "$*" >&2
    exit 1
}

# Prints a command as it could be pasted into a shell.
show() {
    local word line=+
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./:=@%+-]+$ ]]; then
            line+=" $word"
        elif [[ $word =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
            line+=" ${BASH_REMATCH[1]}='${BASH_REMATCH[2]}'"
        else
            line+=" '$word'"
        fi
    done
    printf '%s\n' "$line"
}

# Prints the command, and runs it unless this is a dry run.
run() {
    show "$@"
    [[ -n $dry_run ]] || "$@"
}

[[ -n $app ]] || fail "set HEROKU_APP to the app's name: make heroku-release HEROKU_APP=<name>" \
    "(create one with: heroku create <name>)"
cd "$project_dir"

if [[ -z $dry_run ]]; then
    command -v heroku >/dev/null ||
        fail "the Heroku CLI (heroku) is not installed or not on PATH:" \
            "install it (https://devcenter.heroku.com/articles/heroku-cli), then run: heroku login"
fi

docker_daemon_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# The engine that builds and pushes: the one asked for, else docker if its daemon answers, else
# podman. A dry run runs nothing, so it takes the first one installed.
engine=${BENTOML_CONTAINERIZE_BACKEND:-}
docker_answered=
if [[ -z $engine ]]; then
    if command -v docker >/dev/null && { [[ -n $dry_run ]] || docker_daemon_up; }; then
        engine=docker
        docker_answered=1
    elif command -v podman >/dev/null; then
        engine=podman
    elif command -v docker >/dev/null; then
        engine=docker # its daemon does not answer: reported below
    fi
fi

if [[ -n $dry_run ]]; then
    engine=${engine:-docker}
else
    case $engine in
    "") fail "neither docker nor podman is installed or on PATH: install one of them" ;;
    docker | podman) command -v "$engine" >/dev/null ||
        fail "$engine is not installed or not on PATH (BENTOML_CONTAINERIZE_BACKEND=$engine)" ;;
    *) fail "BENTOML_CONTAINERIZE_BACKEND=$engine: expected docker or podman" ;;
    esac
    if [[ $engine == docker && -z $docker_answered ]] && ! docker_daemon_up; then
        fail "docker is installed but its daemon does not answer (docker version):" \
            "start Docker, or use podman: BENTOML_CONTAINERIZE_BACKEND=podman"
    fi
fi

show heroku auth:whoami
if [[ -z $dry_run ]] && ! heroku auth:whoami >/dev/null 2>&1; then
    fail "the Heroku CLI is not logged in: run heroku login (or set HEROKU_API_KEY), then try again"
fi

# What makes the image a linux/amd64 Docker v2 schema-2 image on each engine, passed to
# `bentoml containerize` as --opt by `make image`.
build_env=()
build_opts="--opt platform=$platform"
push_opts=()
case $engine in
podman)
    build_opts+=" --opt format=docker"
    push_opts=(--format v2s2)
    ;;
docker)
    if [[ -n $dry_run ]] || docker buildx version >/dev/null 2>&1; then
        build_opts+=" --opt provenance=false"
    else
        # Without buildx, docker's classic builder writes schema-2 manifests and no attestations.
        build_env=(env DOCKER_BUILDKIT=0)
    fi
    ;;
esac

# The registry password is the CLI's API token, sent on stdin so that it is never in argv.
printf '+ heroku auth:token | %s login --username _ --password-stdin %s\n' "$engine" "$registry"
if [[ -z $dry_run ]]; then
    heroku auth:token 2>/dev/null | "$engine" login --username _ --password-stdin "$registry" ||
        fail "$engine could not log in to $registry with the Heroku CLI's token:" \
            "check heroku auth:whoami, then try again"
fi

model_args=()
[[ -n $models ]] && model_args=(MODELS="$models")
run "${build_env[@]}" make image BENTOML_CONTAINERIZE_BACKEND="$engine" \
    CONTAINERIZE_OPTS="$build_opts" "${model_args[@]}"
run "$engine" tag "$image" "$target"
run "$engine" push "${push_opts[@]}" "$target"
run heroku container:release web -a "$app"

show heroku apps:info -a "$app" --shell
if [[ -n $dry_run ]]; then
    printf '\nDry run: nothing was run.\n'
    exit 0
fi
url=
while IFS='=' read -r key value; do
    [[ $key == web_url ]] && url=$value
done < <(heroku apps:info -a "$app" --shell)
url=${url:-https://$app.herokuapp.com/}
# The model answering /predict, as the Makefile picks it.
default_model=${models%%,*}
default_model=${default_model%%:*}
default_model=${default_model:-${DLOPS_MODEL_NAME:-binary_classifier_3}}
printf '\nReleased %s at %s\nTry it:\n' "$target" "$url"
printf '  curl %smodels   # the models it serves\n' "$url"
if [[ $default_model == binary_classifier_3 ]]; then
    printf '  curl -F file=@tests/fixtures/digits/test0300_digit3.png %spredict\n' "$url"
else
    printf '  curl -F file=@image.jpg %spredict   # %s answers\n' "$url" "$default_model"
fi
