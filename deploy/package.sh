#!/usr/bin/env bash
# Build warren's Debian package and prove it installs on a clean Debian 12.
#
#   bash deploy/package.sh [OUTDIR]        (default OUTDIR: build-pkg/)
#
#   1. configures OUTDIR (Release, tests off, prefix /usr) and builds warren
#      and its man page
#   2. `cpack -G DEB`: OUTDIR/warren_<version>_amd64.deb; Depends come from
#      dpkg-shlibdeps (the libraries `ldd warren` lists) plus lua-cjson
#   3. makes a scratch Debian 12 root with mmdebstrap (minbase, from Debian's
#      own packages, no registry), copies the package in and, inside it
#      (chroot): `dpkg -i` (which stops at the missing dependencies, as on any
#      fresh system), `apt-get -f install` (pulls exactly the Depends), then
#      checks that no library is missing (`ldd`), runs `warren --version` and
#      `warren check` on the example the package ships, and loads the
#      warren.testing kit with LuaJIT
#
# Not part of deploy/test.sh (it downloads ~60 MB of Debian packages and takes
# a minute or two); tests/integration/test_package.py checks the install
# rules and the package's contents and dependencies on every run.
# Needs root and network access to the Debian mirror in /etc/apt/sources.list*.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$(realpath -m "${1:-build-pkg}")
JOBS=${JOBS:-2}
t0=$SECONDS

say() { echo "package: $*"; }
die() { echo "package: error: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap and chroot)"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: apt-get install mmdebstrap"

say "building in $OUT"
mkdir -p "$OUT"
cmake -S "$ROOT" -B "$OUT" -DCMAKE_BUILD_TYPE=Release -DWARREN_TESTS=OFF \
    -DCMAKE_INSTALL_PREFIX=/usr >"$OUT/configure.log" 2>&1 || { cat "$OUT/configure.log"; exit 1; }
cmake --build "$OUT" -j"$JOBS" >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }

say "cpack -G DEB"
rm -f "$OUT"/warren_*.deb
(cd "$OUT" && cpack -G DEB -B "$OUT" >"$OUT/cpack.log" 2>&1) || { cat "$OUT/cpack.log"; exit 1; }
DEB=$(ls "$OUT"/warren_*.deb)
dpkg-deb -I "$DEB" | sed -n 's/^ \(Package\|Version\|Depends\|Suggests\|Installed-Size\):/  \1:/p'
say "$(dpkg-deb -c "$DEB" | grep -vc '/$') files in $(basename "$DEB") ($(stat -c %s "$DEB") bytes)"

SCRATCH=$OUT/scratch-root
rm -rf "$SCRATCH"
say "scratch Debian 12 root in $SCRATCH (mmdebstrap minbase), then dpkg -i inside it"
EXAMPLE=/usr/share/doc/warren/examples/config/warren.yaml
rc=0
mmdebstrap --variant=minbase --mode=root \
    --customize-hook="copy-in $DEB /tmp" \
    --customize-hook='chroot "$1" sh -c "dpkg -i /tmp/warren_*.deb || true"' \
    --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get -f install -y -q --no-install-recommends' \
    --customize-hook='chroot "$1" dpkg-query -W -f="  installed: \${Package} \${Version} \${db:Status-Status}\n" warren' \
    --customize-hook='chroot "$1" sh -c "if ldd /usr/bin/warren | grep \"not found\"; then exit 1; fi"' \
    --customize-hook='chroot "$1" sh -c "echo \"  \$(warren --version)\""' \
    --customize-hook="chroot \"\$1\" warren check -c $EXAMPLE" \
    --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends luajit2' \
    --customize-hook='chroot "$1" luajit -e "local t = require \"warren.testing\"; print(\"  warren.testing \" .. t._VERSION .. \" loads with \" .. jit.version)"' \
    bookworm "$SCRATCH" >"$OUT/scratch.log" 2>&1 || rc=$?
# what matters in the log: each check (customize hook) and what it printed,
# dpkg's complaints about missing dependencies, warren's own lines, errors
tr -d '\r' <"$OUT/scratch.log" |
    grep -E '^(I: running --customize-hook|  |dpkg: | warren depends|Setting up warren|/usr/share/doc/warren|all handlers|E: |W: |I: success)' |
    sed -e 's/^I: running --customize-hook in shell: sh -c /  hook: /' -e 's/^/  | /' || true
[ "${rc:-0}" -eq 0 ] || die "the scratch-root install failed (mmdebstrap exit ${rc}; $OUT/scratch.log)"
[ -x "$SCRATCH/usr/bin/warren" ] || die "warren is not installed in $SCRATCH"
say "ok: $(basename "$DEB") installs on a clean Debian 12 and runs ($((SECONDS - t0))s)"
