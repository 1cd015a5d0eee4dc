#!/bin/sh
# Install KVStore++ as a systemd service: the `kvstore` system user, /etc/kvstore-plus-plus
# (config.toml from deploy/config.toml and the secrets file kvstore.env, mode 0600, both kept
# when they exist), the units kvstore-plus-plus.service and kvstore-plus-plus@.service with
# ExecStart pointed at kvstored, then `systemctl daemon-reload`. Run again, it changes nothing
# but the units. kvstored itself is installed first (e.g. a venv: pip install kvstore-plus-plus).
#
#   deploy/install.sh [--kvstored PATH] [--root DIR]
#
# --kvstored  the kvstored to run (default: the one on PATH)
# --root      install under DIR instead of / (packaging, tests): no user is created and
#             systemd is not reloaded there
set -eu

usage() { echo "usage: $0 [--kvstored PATH] [--root DIR]" >&2; exit 2; }

ROOT=/
KVSTORED=
while [ $# -gt 0 ]; do
    case "$1" in
        --kvstored) [ $# -ge 2 ] || usage; KVSTORED=$2; shift 2 ;;
        --root) [ $# -ge 2 ] || usage; ROOT=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "$0: unknown option $1" >&2; usage ;;
    esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
[ -n "$KVSTORED" ] || KVSTORED=$(command -v kvstored || true)
case "$KVSTORED" in
    /*) ;;
    *) echo "$0: kvstored not found: install the project first or give --kvstored /absolute/path" >&2; exit 1 ;;
esac
[ -x "$KVSTORED" ] || { echo "$0: $KVSTORED is not an executable file" >&2; exit 1; }
case "$KVSTORED" in
    *[[:space:]#]*) echo "$0: $KVSTORED: a path with spaces or '#' cannot go in ExecStart" >&2; exit 1 ;;
    /home/*|/root/*|/run/user/*) echo "$0: warning: $KVSTORED is hidden from the service by ProtectHome=yes" >&2 ;;
esac

ROOT=${ROOT%/}
ETC=$ROOT/etc/kvstore-plus-plus
UNITS=$ROOT/etc/systemd/system
GROUP=root

if [ -z "$ROOT" ]; then
    if ! getent passwd kvstore >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/kvstore-plus-plus --no-create-home \
            --shell /usr/sbin/nologin --comment "KVStore++" kvstore
        echo "created the system user kvstore"
    fi
    GROUP=kvstore
else
    echo "installing under $ROOT: no user created, systemd not reloaded"
fi

# The node reads its config as kvstore (group), never writes it; secrets are systemd's to read.
install -d -m 0750 "$ETC"
[ "$GROUP" = root ] || chgrp "$GROUP" "$ETC"
if [ ! -e "$ETC/config.toml" ]; then
    install -m 0640 "$HERE/config.toml" "$ETC/config.toml"
    [ "$GROUP" = root ] || chgrp "$GROUP" "$ETC/config.toml"
    echo "wrote $ETC/config.toml"
fi
if [ ! -e "$ETC/kvstore.env" ]; then
    (umask 077 && printf '%s\n' \
        '# Secrets for kvstored, KVSTORE_<SETTING>=value (README, "The cluster key"), e.g.' \
        '# KVSTORE_CLUSTER_KEY=<64 hex digits, the same on every node>' \
        '# KVSTORE_REPLICATION_PASSWORD=...' >"$ETC/kvstore.env")
    echo "wrote $ETC/kvstore.env"
fi
chmod 0600 "$ETC/kvstore.env"

install -d -m 0755 "$UNITS"
for unit in kvstore-plus-plus.service kvstore-plus-plus@.service; do
    sed "s#^ExecStart=/usr/local/bin/kvstored #ExecStart=$KVSTORED #" "$HERE/$unit" >"$UNITS/$unit.tmp"
    grep -q "^ExecStart=$KVSTORED " "$UNITS/$unit.tmp" || { echo "$0: no ExecStart to point at kvstored in $unit" >&2; exit 1; }
    chmod 0644 "$UNITS/$unit.tmp"
    mv "$UNITS/$unit.tmp" "$UNITS/$unit"
done
echo "installed the units in $UNITS (ExecStart=$KVSTORED)"

if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "systemd reloaded: systemctl enable --now kvstore-plus-plus"
fi
