#!/usr/bin/env bash
# Builds the local base image (default kvstore-base:bookworm) when it does not exist yet:
# a minimal Debian bookworm root file system with Debian's python3 (3.11, as the project needs)
# and python3-venv, made by debootstrap and loaded with `docker import`. For machines that
# cannot pull python:3.11-slim. The Debian mirror is the one this machine's apt already uses,
# read from /etc/apt/sources.list(.d) at run time; KVSTORE_DEBIAN_MIRROR overrides it.
#
#   compose/base-image.sh [IMAGE]      (as root: debootstrap needs it)
set -euo pipefail

IMAGE=${1:-kvstore-base:bookworm}
SUITE=bookworm
PACKAGES=python3,python3-venv

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base-image: $IMAGE exists; reusing it"
  exit 0
fi

# The first archive URI whose suites include $SUITE, in deb822 (.sources) or one-line (.list) form.
apt_mirror() {
  local file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [[ -r $file ]] || continue
    case $file in
      *.sources)
        awk -v suite="$SUITE" '
          /^[[:space:]]*$/ { if (uri != "" && found) { print uri; exit } uri = ""; found = 0; next }
          $1 == "URIs:" { uri = $2 }
          $1 == "Suites:" { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
          END { if (uri != "" && found) print uri }' "$file" ;;
      *)
        awk -v suite="$SUITE" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {
          if ($(i + 1) == suite) { print $i; exit } break } }' "$file" ;;
    esac
  done | head -n 1
}

MIRROR=${KVSTORE_DEBIAN_MIRROR:-$(apt_mirror)}
if [[ -z $MIRROR ]]; then
  echo "base-image: no apt source for $SUITE in /etc/apt; set KVSTORE_DEBIAN_MIRROR" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

ROOTFS=$(mktemp -d /tmp/kvstore-rootfs.XXXXXX)
# --one-file-system: never follow a /proc or /sys that a failed debootstrap left mounted.
trap 'rm -rf --one-file-system "$ROOTFS" "$ROOTFS.log"' EXIT
start_s=$SECONDS
echo "base-image: debootstrap $SUITE ($PACKAGES) from the machine's apt mirror"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
  tail -n 20 "$ROOTFS.log" >&2
  exit 1
}
# What apt downloaded is not needed in the image; services that packages installed later
# (Prometheus) would start are not started during a build (as in Debian's official images).
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
tar -C "$ROOTFS" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  - "$IMAGE" >/dev/null
echo "base-image: built $IMAGE in $((SECONDS - start_s)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
