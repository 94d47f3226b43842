#!/usr/bin/env bash
# Print the base image the testbed image builds FROM, making sure the engine has it:
#   1. $BASE_IMAGE if it is already there;
#   2. the default (python:3.11-slim) if it is there or can be pulled;
#   3. otherwise a local Debian bookworm image with Python 3.11, built from Debian's packages with
#      debootstrap (from the mirror this machine's apt configuration names for bookworm, and only
#      from it: an error if it names none) and imported into the engine.
# Progress goes to stderr; stdout is only the image name. Idempotent: a present image is reused.
set -euo pipefail

DEFAULT_BASE=python:3.11-slim
LOCAL_BASE=${LOCAL_BASE:-aicn-testbed-base:bookworm}
SUITE=bookworm

say() { echo "base image: $*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if [ -n "${BASE_IMAGE:-}" ] && have_image "$BASE_IMAGE"; then
  echo "$BASE_IMAGE"; exit 0
fi
for image in "$DEFAULT_BASE" "$LOCAL_BASE"; do
  if have_image "$image"; then say "using $image"; echo "$image"; exit 0; fi
done
if timeout 60 docker pull --quiet "$DEFAULT_BASE" >/dev/null 2>&1; then
  say "pulled $DEFAULT_BASE"; echo "$DEFAULT_BASE"; exit 0
fi
say "$DEFAULT_BASE cannot be pulled; building $LOCAL_BASE from Debian packages"

# the mirror this machine's apt already uses for $SUITE, and no other: deb822 stanzas first
# (/etc/apt/sources.list.d/*.sources), then one-line entries (/etc/apt/sources.list, sources.list.d/*.list)
mirror=$(awk -v suite="$SUITE" '
  function done_stanza() { if (deb && enabled && has_suite && uri != "") { print uri; found = 1; exit } }
  function reset() { deb = 0; enabled = 1; has_suite = 0; uri = "" }
  BEGIN { reset() }
  FNR == 1 || /^[ \t]*$/ { done_stanza(); reset() }
  /^[ \t]*$/ { next }
  /^[ \t]*#/ { next }
  tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
  tolower($1) == "enabled:" { enabled = (tolower($2) != "no") }
  tolower($1) == "uris:" { uri = $2 }
  tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has_suite = 1 }
  END { if (!found) done_stanza() }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
if [ -z "$mirror" ]; then
  mirror=$(awk -v suite="$SUITE" '
    $1 == "deb" {
      i = 2
      if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }  # [options]
      if ($(i + 1) == suite) { print $i; exit }
    }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
if [ -z "$mirror" ]; then
  echo "error: this machine's apt configuration names no mirror for Debian $SUITE (a deb822 stanza in" \
       "/etc/apt/sources.list.d/*.sources, or a 'deb URI $SUITE main' line in /etc/apt/sources.list);" \
       "add one, or give the engine $DEFAULT_BASE" >&2
  exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "error: building $LOCAL_BASE with debootstrap needs root (or pull $DEFAULT_BASE first)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

rootfs=$(mktemp -d /tmp/testbed-rootfs.XXXXXX)
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
say "debootstrap $SUITE from $mirror"
if ! debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
  tail -n 30 "$rootfs.log" >&2
  echo "error: debootstrap failed" >&2
  exit 1
fi
# what a container never needs: package lists and caches, documentation, translations
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$LOCAL_BASE" >/dev/null
say "built $LOCAL_BASE ($(docker image inspect --format '{{.Size}}' "$LOCAL_BASE" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$LOCAL_BASE"
