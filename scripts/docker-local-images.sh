#!/usr/bin/env bash
# Build the base images of the compose stack locally, for a Docker engine that cannot reach Docker Hub.
#
#   scripts/docker-local-images.sh                  # vrnn-local/python:3.11-bookworm and vrnn-local/redis:7
#   MIRROR=http://deb.example/debian scripts/docker-local-images.sh
#
# It stands in for a registry and nothing more: the images it makes are a Debian 12 root file system
# (debootstrap --variant=minbase, `docker import`), with Debian's python3 (3.11) and python3-venv, or with
# Debian's redis-server (7.0). The project's own image (docker/Dockerfile) does not use this script; point it at
# the results with build arguments (docker/README.md, "Air-gapped builds"):
#
#   PYTHON_IMAGE=vrnn-local/python:3.11-bookworm REDIS_IMAGE=vrnn-local/redis:7 docker-compose up --build
#
# Needs root, debootstrap and a Docker engine. Images that already exist are kept (FORCE=1 rebuilds them).
set -euo pipefail

MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SUITE="${SUITE:-bookworm}"
PREFIX="${PREFIX:-vrnn-local}"
FORCE="${FORCE:-0}"

die() { echo "docker-local-images: $*" >&2; exit 2; }
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd)"
have() { [ "$FORCE" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

base="$PREFIX/debian:$SUITE"
if ! have "$base"; then
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    echo "docker-local-images: debootstrap $SUITE from $MIRROR" >&2
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
fi

# Each image: FROM the base, install Debian packages, clean the lists. The Dockerfiles come on standard input,
# so the build context is empty.
build() {
    local tag="$1" packages="$2" extra="$3"
    have "$tag" && { echo "docker-local-images: $tag exists" >&2; return; }
    echo "docker-local-images: building $tag" >&2
    docker build -q -t "$tag" - >/dev/null <<EOF
FROM $base
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN apt-get update && apt-get install -y --no-install-recommends $packages && rm -rf /var/lib/apt/lists/*
$extra
EOF
}

build "$PREFIX/python:3.11-$SUITE" "python3 python3-venv python-is-python3 ca-certificates" 'CMD ["python3"]'
build "$PREFIX/redis:7" "redis-server redis-tools" 'WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no"]'

docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "^$PREFIX/" >&2
