#!/usr/bin/env bash
# Build the device host image (default aicn-testbed:latest) on a machine whose engine may reach no
# image registry: a base image the engine has (scripts/base-image.sh), the host's Python packages
# as wheels fetched here into build/wheelhouse (for CPython 3.11 on manylinux, whatever Python this
# machine runs), and the gRPC stubs in gen/ (`make install` generates them).
# Idempotent: the wheelhouse is refilled only when the pins change; docker's cache does the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-aicn-testbed:latest}
PYTHON=${PYTHON:-.venv/bin/python}
WHEELHOUSE=build/wheelhouse

if [ ! -f gen/.stubs-stamp ]; then
  echo "error: gen/ has no generated stubs; run \`make install\` first" >&2
  exit 1
fi

requirements=$("$PYTHON" -m orchestrator.deploy.image requirements)
if [ ! -f "$WHEELHOUSE/requirements.txt" ] || [ "$(cat "$WHEELHOUSE/requirements.txt")" != "$requirements" ]; then
  echo "wheelhouse: fetching the host's packages into $WHEELHOUSE"
  rm -rf "$WHEELHOUSE" && mkdir -p "$WHEELHOUSE"
  arch=$(uname -m)
  printf '%s\n' "$requirements" >"$WHEELHOUSE/requirements.in"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 --implementation cp \
    --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
    --dest "$WHEELHOUSE" -r "$WHEELHOUSE/requirements.in"
  mv "$WHEELHOUSE/requirements.in" "$WHEELHOUSE/requirements.txt"  # written last: marks a complete wheelhouse
fi

base=$(scripts/base-image.sh)
echo "image: building $IMAGE from $base"
mkdir -p build
build() {
  if ! docker build --build-arg "BASE_IMAGE=$base" "$@" . >>build/image-build.log 2>&1; then
    tail -n 40 build/image-build.log >&2
    echo "error: docker build failed; the whole log is build/image-build.log" >&2
    exit 1
  fi
}
: >build/image-build.log
build --target build --tag "${IMAGE%:*}:build"  # the build stage, kept for the cache
build --tag "$IMAGE"
# earlier builds, no longer tagged nor used by a container
docker image prune --force --filter label=aicn-testbed.stage >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
echo "image: $IMAGE ready ($(awk -v s="$size" 'BEGIN {printf "%.0f MB", s / 1e6}'))"
