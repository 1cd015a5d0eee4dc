#!/usr/bin/env bash
# Starts and stops the compose cluster (docker-compose.yml) with one command each:
#
#   compose/cluster.sh up            build, then start and wait until every node is healthy
#   compose/cluster.sh build         base image if missing, wheelhouse, images (kvchaos's docker backend uses it)
#   compose/cluster.sh wheelhouse    the wheels only, in compose/wheelhouse (the systemd run's image uses them)
#   compose/cluster.sh down [-v]     stop and remove the containers (-v: and the data volumes)
#
# Environment:
#   KVSTORE_BASE_IMAGE   the image to build on (default: kvstore-base:bookworm, made by base-image.sh
#                        when missing; python:3.11-slim where it can be pulled)
#   COMPOSE_PROFILES     `monitoring` also builds and starts Prometheus
#   PYTHON               a CPython 3.11 with pip that builds the wheels: a command name or an
#                        absolute path (default: the project's .venv)
#   KVSTORE_WAIT_S       how long `up` waits for every container to be healthy (default 180)
set -euo pipefail
cd "$(dirname "$0")"

PROJECT=kvstore
ENV_FILE=kvstore.env
PYTHON=${PYTHON:-$PWD/../.venv/bin/python}
WAIT_S=${KVSTORE_WAIT_S:-180}
export KVSTORE_BASE_IMAGE=${KVSTORE_BASE_IMAGE:-kvstore-base:bookworm}

# Compose v2 where it is installed, else Debian's docker-compose 1.29 (same file, same verbs).
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  COMPOSE=(docker-compose)
fi
COMPOSE+=(--project-name "$PROJECT" --file docker-compose.yml)

log() { echo "cluster.sh: $*"; }

# The passwords and the cluster key, made once; the nodes take the passwords when their volumes
# are first initialised and the key (node/cluster_key.py) on every start, so this file must stay
# as long as the volumes do (`down -v` and then delete it to start afresh).
ensure_env_file() {
  if [[ -e $ENV_FILE ]]; then
    # Made before there was a cluster key: add one (the primary seals the signing secrets with it).
    if ! grep -q '^KVSTORE_CLUSTER_KEY=' "$ENV_FILE"; then
      printf 'KVSTORE_CLUSTER_KEY=%s\n' "$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')" >>"$ENV_FILE"
      log "added a cluster key to compose/$ENV_FILE"
    fi
    return
  fi
  local admin replication key
  admin=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(18))')
  replication=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(18))')
  key=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')
  (
    umask 077
    printf '%s\n' "# Made by compose/cluster.sh; never commit it." \
      "KVSTORE_ADMIN_PASSWORD=$admin" \
      "KVSTORE_REPLICATION_USER=replicator" \
      "KVSTORE_REPLICATION_PASSWORD=$replication" \
      "KVSTORE_CLUSTER_KEY=$key" >"$ENV_FILE"
  )
  log "wrote compose/$ENV_FILE (superuser admin's password is in it)"
}

# The project (wheelhouse/project/) and every dependency (wheelhouse/deps/) as wheels for the
# image's CPython 3.11: the runtime dependencies only, no extra (test, bench, chaos), so the
# image holds what a node runs (tests/test_wheel.py checks the project's wheel). A fixed
# SOURCE_DATE_EPOCH makes the project's wheel the same bytes for the same code, so that the
# image build reuses its layers and `up` recreates no container.
build_wheelhouse() {
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    log "$PYTHON is not CPython 3.11: its wheels would not install in the image (set PYTHON)" >&2
    exit 1
  fi
  # setuptools builds in the checkout's build/ and packs whatever build/lib holds: files of an
  # older layout left there (a module since moved out of the package) would ship again.
  rm -rf wheelhouse ../build
  SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel --quiet --wheel-dir wheelhouse/deps ..
  mkdir wheelhouse/project
  mv wheelhouse/deps/kvstore_plus_plus-*.whl wheelhouse/project/
}

# An image; --quiet keeps the classic builder's step output out of the way (errors still show).
build_image() {
  local tag=$1 dockerfile=$2
  docker build --quiet --file "$dockerfile" --build-arg BASE_IMAGE="$KVSTORE_BASE_IMAGE" --tag "$tag" . >/dev/null
}

timed() {
  local what=$1 start_s=$SECONDS
  shift
  "$@"
  log "$what: $((SECONDS - start_s)) s"
}

# Every container of the project healthy, or its log's tail and exit 1.
wait_healthy() {
  local deadline=$((SECONDS + WAIT_S)) id name health
  for id in $("${COMPOSE[@]}" ps -q); do
    name=$(docker inspect -f '{{.Name}}' "$id")
    while health=$(docker inspect -f '{{.State.Health.Status}}' "$id") && [[ $health != healthy ]]; do
      if ((SECONDS >= deadline)) || [[ $(docker inspect -f '{{.State.Running}}' "$id") != true ]]; then
        log "${name#/} is not healthy ($health) after $WAIT_S s at most; its log ends:" >&2
        docker logs --tail 20 "$id" >&2
        exit 1
      fi
      sleep 1
    done
  done
}

start() {
  "${COMPOSE[@]}" up --detach --no-build
  wait_healthy
}

build() {
  if [[ $KVSTORE_BASE_IMAGE == kvstore-base:* ]]; then
    timed "base image $KVSTORE_BASE_IMAGE" ./base-image.sh "$KVSTORE_BASE_IMAGE"
  fi
  timed "wheelhouse" build_wheelhouse
  timed "node image kvstore:latest" build_image kvstore:latest Dockerfile
  if [[ ,${COMPOSE_PROFILES:-}, == *,monitoring,* ]]; then
    timed "Prometheus image kvstore-prometheus:latest" build_image kvstore-prometheus:latest Dockerfile.prometheus
  fi
}

up() {
  ensure_env_file
  build
  timed "start and wait until healthy" start
  "${COMPOSE[@]}" ps
}

down() {
  ensure_env_file  # the compose file names it, even to stop
  # Every profile, so that a Prometheus started with COMPOSE_PROFILES=monitoring goes too.
  COMPOSE_PROFILES=monitoring "${COMPOSE[@]}" down "$@"
}

case ${1:-} in
  up) up ;;
  build) build ;;
  wheelhouse) timed "wheelhouse" build_wheelhouse ;;
  down) shift && down "$@" ;;
  *)
    echo "usage: $0 up | build | wheelhouse | down [-v]" >&2
    exit 2
    ;;
esac
