#!/usr/bin/env bash
# The submission's image built and run for real (called by .ci/run; docs/container.md):
#   1. a Docker engine: the running one, else Debian's docker.io (installed with apt-get when
#      missing) started here, and stopped again at the end by its PID, also on failure;
#   2. a local base image (no container registry is needed): debootstrap --variant=minbase bookworm
#      then `docker import`, cached as a tarball under $FLARE_CI_CACHE (default ~/.cache/flare-ci);
#      FLARE_CI_BASE names another Debian or Ubuntu image to build on instead;
#   3. the CPU image from the one Dockerfile (build arguments), torch from the local CPU wheel
#      that pip finds (or PyTorch's CPU index), pip trusting the CA bundle that pip trusts here;
#   4. tests/test_docker.py against it: the organisers' `docker run`, outputs, exit codes, ownership,
#      nothing written outside the outputs, and evaluation.efficiency --image on the real engine.
# Where Docker cannot run at all (no engine and none can be installed or started) it says so in one
# line and exits 0; any failure after that fails.
set -euo pipefail
cd "$(dirname "$0")/.."

image="${FLARE_CI_IMAGE:-flare:ci-cpu}"
base="${FLARE_CI_BASE:-flare-ci-base:bookworm}"
cache="${FLARE_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flare-ci}"
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
work="$(mktemp -d)"
daemon_pid=""

stop_daemon() {
    [ -n "$daemon_pid" ] || return 0
    kill "$daemon_pid" 2>/dev/null || true
    for _ in $(seq 60); do
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$daemon_pid" 2>/dev/null; then
        echo "dockerd (pid $daemon_pid) did not stop in 30 s: killed" >&2
        kill -9 "$daemon_pid" 2>/dev/null || true
    fi
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=""
}
cleanup() {
    local status=$?
    stop_daemon
    rm -rf "$work" .ci/build
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

skip() {
    echo "docker test skipped: $*"
    exit 0
}
last_line() { { grep -v '^\s*$' "$1" || true; } | tail -n 1; }
apt_install() {  # apt_install PACKAGE...: quietly, its log's last line on failure
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@") \
        >"$work/apt.log" 2>&1
}

# 1. The engine.
if ! docker info >/dev/null 2>"$work/info.log"; then
    [ "$(uname -s)" = Linux ] || skip "no Docker engine answers, and this is not Linux"
    [ "$(id -u)" = 0 ] || skip "no Docker engine answers ($(last_line "$work/info.log")), and starting one needs root"
    if command -v pgrep >/dev/null && pid="$(pgrep -x dockerd)"; then
        skip "dockerd (pid $pid) is running but does not answer 'docker info'"
    fi
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        command -v apt-get >/dev/null || skip "no Docker engine, and no apt-get to install Debian's docker.io"
        echo "installing Debian's docker.io"
        apt_install docker.io || skip "apt-get install docker.io failed: $(last_line "$work/apt.log")"
    fi
    dockerd >"$work/dockerd.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 120); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.5
    done
    if ! docker info >/dev/null 2>&1; then
        reason="$(last_line "$work/dockerd.log")"
        stop_daemon
        skip "dockerd did not start: $reason"
    fi
    echo "started dockerd (pid $daemon_pid)"
fi

# 2. The base image.
if ! docker image inspect "$base" >/dev/null 2>&1; then
    [ "$base" = flare-ci-base:bookworm ] || { echo "FLARE_CI_BASE $base: no such image" >&2; exit 1; }
    tarball="$cache/bookworm-minbase.tar.gz"
    if [ ! -s "$tarball" ]; then
        [ "$(id -u)" = 0 ] || { echo "making the base image needs root (debootstrap); or set FLARE_CI_BASE" >&2; exit 1; }
        if ! command -v debootstrap >/dev/null; then
            echo "installing Debian's debootstrap"
            apt_install debootstrap || skip "apt-get install debootstrap failed: $(last_line "$work/apt.log")"
        fi
        echo "making the base image: debootstrap --variant=minbase bookworm (a few minutes)"
        started=$SECONDS
        if ! debootstrap --variant=minbase bookworm "$work/rootfs" >"$work/debootstrap.log" 2>&1; then
            tail -n 20 "$work/debootstrap.log" >&2
            echo "debootstrap failed" >&2
            exit 1
        fi
        # debootstrap leaves the packages it installed and apt's lists (80 MB); the image needs neither.
        find "$work/rootfs/var/cache/apt/archives" "$work/rootfs/var/lib/apt/lists" -type f -delete
        mkdir -p "$cache"
        tar -C "$work/rootfs" -czf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
        rm -rf "$work/rootfs"
        echo "base made in $((SECONDS - started)) s, cached in $tarball"
    fi
    docker import --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "$tarball" "$base" >/dev/null
fi

# 3. The CPU image. torch: a local CPU wheel of the pinned version (pip's configured find-links)
# copied into the build context (.ci/build/, git- but not docker-ignored), else PyTorch's CPU
# index. pip in the build trusts what pip trusts here (its configured cert, else the system's CA
# bundle), so that a TLS-intercepting proxy works as it does outside.
pin="$(grep '^torch==' requirements.txt)"
mkdir -p .ci/build
build_args=(--build-arg BASE_IMAGE="$base" --build-arg TORCH_CUDA=none)
if "$python" -m pip download -q --no-deps --only-binary :all: --python-version 3.11 \
        --platform "manylinux_2_28_$(uname -m)" -d .ci/build "$pin+cpu" >"$work/pip.log" 2>&1; then
    build_args+=(--build-arg TORCH_WHEELS=.ci/build)
else
    echo "no local CPU wheel for $pin: the build takes torch from PyTorch's CPU index"
    build_args+=(--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu)
fi
ca="${PIP_CERT:-$("$python" -m pip config list 2>/dev/null | sed -n "s/^.*\.cert='\(.*\)'$/\1/p" | tail -n 1)}"
ca="${ca:-$("$python" -c 'import ssl; print(ssl.get_default_verify_paths().cafile or "")')}"
if [ -f "$ca" ]; then
    cp "$ca" .ci/build/ca-certificates.crt
    build_args+=(--build-arg CA_CERTS=.ci/build/ca-certificates.crt)
fi
echo "building $image (CPU, on $base)"
started=$SECONDS
if ! docker build -t "$image" "${build_args[@]}" . >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    echo "docker build failed" >&2
    exit 1
fi
rm -rf .ci/build
size="$(docker image inspect -f '{{.Size}}' "$image")"
echo "built $image in $((SECONDS - started)) s: $((size / 1000000)) MB"

# 4. The checks.
FLARE_DOCKER_IMAGE="$image" FLARE_DOCKER_BASE="$base" "$python" -m pytest -q -p no:cacheprovider tests/test_docker.py
