#!/usr/bin/env bash
# Build warren's container image with buildah, without a registry, and check it.
#
#   bash deploy/container/build.sh [--rebase]
#
#   1. the Debian 12 base, localhost/debian-base:bookworm, made from Debian's
#      own packages with mmdebstrap (minbase + ca-certificates) and imported
#      into buildah's store; kept for later builds (--rebase makes it again)
#   2. `buildah bud --isolation chroot` of deploy/container/Dockerfile
#      (multi-stage: build stage with the -dev packages, runtime stage with
#      the runtime libraries only) -> localhost/warren:<version>
#   3. checks, each with `buildah run` in a container of the new image:
#      the image config (user, entrypoint, stop signal), no configuration
#      baked in, `ldd` finds every library, `warren --version`, and `warren
#      check` on the Kubernetes example (deploy/k8s/overlays/example/warren)
#      and on config/ + handlers/, both mounted read-only as a ConfigMap would be
#
# Slow (a few minutes: two apt-get runs and a compile inside the build), so
# not part of deploy/test.sh. Needs root, buildah and mmdebstrap (Debian
# packages: apt-get install buildah mmdebstrap) and network access to the
# Debian mirror. Environment: IMAGE (default localhost/warren:<version>),
# BASE_IMAGE (default localhost/debian-base:bookworm), WORK (default
# /var/tmp/warren-image).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
VERSION=$(sed -n 's/^project(warren VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
IMAGE=${IMAGE:-localhost/warren:$VERSION}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-base:bookworm}
WORK=${WORK:-/var/tmp/warren-image}
REBASE=0
[ "${1:-}" = "--rebase" ] && REBASE=1
t_start=$SECONDS

say() { echo "image: $*"; }
die() { echo "image: error: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"
for tool in buildah mmdebstrap; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install buildah mmdebstrap"
done
mkdir -p "$WORK"

containers=()
cleanup() {
    local c
    for c in "${containers[@]}"; do
        buildah rm "$c" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

# ---- 1. the base ------------------------------------------------------------
if [ "$REBASE" -eq 1 ] || ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    t0=$SECONDS
    say "making $BASE_IMAGE with mmdebstrap (Debian 12 minbase + ca-certificates)"
    rm -f "$WORK/rootfs.tar"
    mmdebstrap --variant=minbase --include=ca-certificates bookworm "$WORK/rootfs.tar" \
        >"$WORK/mmdebstrap.log" 2>&1 || { tail -20 "$WORK/mmdebstrap.log"; die "mmdebstrap failed"; }
    ctr=$(buildah from scratch)
    containers+=("$ctr")
    mnt=$(buildah mount "$ctr")
    tar -C "$mnt" -xf "$WORK/rootfs.tar"
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/bash "$ctr"
    buildah commit --quiet "$ctr" "$BASE_IMAGE" >/dev/null
    say "base ready in $((SECONDS - t0))s ($(du -h "$WORK/rootfs.tar" | cut -f1) rootfs)"
else
    say "using $BASE_IMAGE (already in buildah's store; --rebase makes it again)"
fi

# ---- 2. the image -------------------------------------------------------------
t0=$SECONDS
say "buildah bud --isolation chroot -f deploy/container/Dockerfile -> $IMAGE"
if ! buildah bud --isolation chroot --layers=false --build-arg "BASE=$BASE_IMAGE" \
        -f deploy/container/Dockerfile -t "$IMAGE" "$ROOT" >"$WORK/bud.log" 2>&1; then
    tail -40 "$WORK/bud.log"
    die "the build failed (whole log: $WORK/bud.log)"
fi
grep -E '^(STEP [0-9]+/[0-9]+: FROM|warren [0-9]|NEEDED by| 0x.*NEEDED)' "$WORK/bud.log" |
    sed 's/^/  | /' || true
say "built in $((SECONDS - t0))s; log $WORK/bud.log"

# ---- 3. checks --------------------------------------------------------------
fail=0
check() { # what, command...: run, report
    local what=$1
    shift
    if out=$("$@" 2>&1); then
        say "ok   $what"
        [ -z "$out" ] || echo "$out" | sed 's/^/       /'
    else
        say "FAIL $what"
        echo "$out" | sed 's/^/       /'
        fail=1
    fi
}
run_in() { # [buildah run options...] -- command...: in a fresh container of the image
    local opts=() c
    while [ "$1" != "--" ]; do
        opts+=("$1")
        shift
    done
    c=$(buildah from --quiet "$IMAGE")
    containers+=("$c")
    buildah run --isolation chroot "${opts[@]}" "$c" "$@"
}

cfg=$(buildah inspect --type image --format \
    'user={{.OCIv1.Config.User}} entrypoint={{.OCIv1.Config.Entrypoint}} cmd={{.OCIv1.Config.Cmd}} stopsignal={{.OCIv1.Config.StopSignal}} ports={{.OCIv1.Config.ExposedPorts}}' \
    "$IMAGE")
say "image config: $cfg"
check "runs as uid 10001, entrypoint warren, STOPSIGNAL SIGTERM" \
    bash -c "[[ '$cfg' == *'user=10001:10001'* && '$cfg' == *'entrypoint=[/usr/bin/warren]'* && '$cfg' == *'stopsignal=SIGTERM'* ]]"

check "warren --version" run_in -- /usr/bin/warren --version
check "the process runs as warren (uid 10001)" run_in -- /usr/bin/id
check "no configuration or handler baked in (/etc/warren is empty)" \
    run_in -- sh -c 'test -z "$(ls -A /etc/warren)"'
check "ldd finds every library" run_in -- sh -c '! ldd /usr/bin/warren | grep "not found"'
# the runtime stage's package list, as the Dockerfile has it (after its last FROM)
mapfile -t runtime_pkgs < <(awk '/^FROM / {on = 0; n++} {line[NR] = $0; st[NR] = n}
    END {for (i = 1; i <= NR; i++) if (st[i] == n) print line[i]}' deploy/container/Dockerfile |
    awk '/apt-get install/ {on = 1; next} on && /&&/ {on = 0} on {for (i = 1; i <= NF; i++)
    if ($i != "\\") print $i}')
check "the runtime packages (${#runtime_pkgs[@]} in the Dockerfile) are installed" run_in -- \
    dpkg-query -W -f='${Package} ${Version}\n' "${runtime_pkgs[@]}"
check "no compiler in the runtime image" run_in -- sh -c '! command -v cc'

example=$ROOT/deploy/k8s/overlays/example/warren
check "warren check on the Kubernetes example mounted at /etc/warren" \
    run_in -v "$example:/etc/warren:ro" --env WARREN_AMQP_URL=amqp://u:p@rabbitmq:5672/shop \
    --env WARREN_REDIS_URL=redis://redis:6379/0 -- /usr/bin/warren check -c /etc/warren/warren.yaml
check "warren check on config/warren.yaml with handlers/ mounted" \
    run_in -v "$ROOT/config:/srv/config:ro" -v "$ROOT/handlers:/srv/handlers:ro" -- \
    /usr/bin/warren check -c /srv/config/warren.yaml

size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -1)
say "image $IMAGE: $size; total $((SECONDS - t_start))s"
[ "$fail" -eq 0 ] || die "some checks failed"
say "all checks passed"
