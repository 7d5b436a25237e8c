#!/usr/bin/env bash
# Prepares a Debian machine with no Docker engine and no reachable image registry (CI here) for
# tests/test_container.py: podman from Debian's packages, a containers.conf that suits this
# sandbox, and a local stand-in for the python:3.11-slim base image that `bentoml containerize`
# starts FROM. Idempotent, and a few seconds once done. Run as root.
#
#   bash deploy/ci/setup-podman.sh
#   export CONTAINERS_CONF=/var/tmp/dlops-podman/containers.conf   # printed at the end
#
# The stand-in belongs to this test set-up only: on a machine that reaches Docker Hub the
# official image is pulled as usual and nothing here is needed.
set -euo pipefail

state_dir=${DLOPS_PODMAN_DIR:-/var/tmp/dlops-podman}
containers_conf=$state_dir/containers.conf
suite=bookworm
debian_base=localhost/debian-base:$suite
# The name the generated Dockerfile's `FROM python:3.11-slim` resolves to.
python_base=docker.io/library/python:3.11-slim
packages=(podman runc netavark aardvark-dns iptables catatonit debootstrap)

log() { printf 'setup-podman: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "run this as root (it installs packages and builds images in root's podman store)"
    exit 1
fi

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null
fi

# Passed through CONTAINERS_CONF rather than written to /etc. The sandbox caps nofile at 20000,
# so podman's default ulimits fail in setrlimit; crun refuses this host's hybrid cgroups, runc
# does not; a CNI config left by the packages would otherwise win over netavark.
mkdir -p "$state_dir"
cat >"$containers_conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_backend = "netavark"

[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$containers_conf

if podman image exists "$python_base"; then
    log "$python_base is already in podman's store"
else
    if ! podman image exists "$debian_base"; then
        # The Debian mirror apt already uses here (no other host is reachable).
        mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' |
            awk -v suite="$suite" '$2 == suite { print $1; exit }')
        mirror=${mirror:-http://deb.debian.org/debian/}
        rootfs=$state_dir/rootfs
        rm -rf "$rootfs"
        log "debootstrap --variant=minbase $suite from $mirror"
        debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$state_dir/debootstrap.log"
        # Slim like debian:bookworm-slim, which python:3.11-slim starts from (no package caches,
        # no documentation), so that the image size measured on the stand-in means something.
        rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
            "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
        printf 'path-exclude /usr/share/%s/*\n' doc man info locale \
            >"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
        tar -C "$rootfs" -c . | podman import --quiet - "$debian_base" >/dev/null
        rm -rf "$rootfs"
    fi
    # HTTPS to the package registries goes through a proxy whose CA lives in
    # /usr/local/share/ca-certificates here; pip inside the image build must trust it too.
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
    mkdir "$context/ca"
    cp /usr/local/share/ca-certificates/*.crt "$context/ca/" 2>/dev/null || true
    cat >"$context/Containerfile" <<EOF
FROM $debian_base
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        python3 python3-venv ca-certificates \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOF
    log "building the stand-in $python_base (Debian $suite's python3)"
    podman build --quiet --tag "$python_base" "$context" >/dev/null
fi

log "ready: $(podman --version), base $(podman image inspect --format '{{.Id}}' "$python_base" |
    cut -c1-12)"
echo "export CONTAINERS_CONF=$containers_conf"
