#!/usr/bin/env bash
# Check that every C source and header is as clang-format (the checked-in
# .clang-format) writes it. Lists the files that differ and exits 1 when there
# are any; `bash deploy/check_format.sh --fix` rewrites them in place.
# Run by the unit tests (ctest -L unit: format_check).
set -uo pipefail
cd "$(dirname "$0")/.."
CF=${CLANG_FORMAT:-clang-format-14}
command -v "$CF" >/dev/null 2>&1 || { echo "check_format: $CF is not installed (Debian package clang-format-14)"; exit 1; }
mapfile -t files < <(git ls-files 'sidecar/*.c' 'sidecar/*.h' 'tests/*.c' 'tests/*.h' 2>/dev/null ||
    find sidecar tests -name '*.[ch]')
if [ "${1:-}" = "--fix" ]; then
    "$CF" -i "${files[@]}"
    exit
fi
bad=0
for f in "${files[@]}"; do
    if ! "$CF" --dry-run -Werror "$f" >/dev/null 2>&1; then
        echo "not formatted: $f (bash deploy/check_format.sh --fix)"
        bad=$((bad + 1))
    fi
done
echo "check_format: ${#files[@]} files, $bad not formatted"
[ "$bad" -eq 0 ]
