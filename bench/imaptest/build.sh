#!/bin/sh
# Build Dovecot's imaptest against Debian's dovecot-dev (2.3.19) and leave the binary and its
# compliance scripts in OUT_DIR:
#
#     bench/imaptest/build.sh SRC_DIR_OR_GIT_DIR [OUT_DIR]
#
# SRC_DIR_OR_GIT_DIR: an imaptest source tree, or a (bare) git directory of
# https://github.com/dovecot/imaptest, from which the pinned commit below is extracted.
# OUT_DIR (default bench/imaptest/build/, git-ignored) receives `imaptest` and `tests/`
# (imaptest's src/tests/) and `imaptest.version` (0.0.0+COMMIT).  Installs its build
# dependencies with apt-get when they are missing.
#
# The pin: 924f619 (2022-03-09) is the last imaptest commit that builds against Dovecot 2.3;
# the next one, ba1d6ab, adopts Dovecot 2.4's three-argument str_begins().  Debian's 2.3.19.1
# carries the fix for CVE-2024-23185 (from 2.3.21.1) that gave imap_parser_create() a fourth `params` argument,
# which imaptest never passed: the three calls are given NULL (no list-depth limit, as before).
set -eu

PIN=924f619d4ad80f370bd45fb2cec27805fee6d19c
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${1:?usage: build.sh SRC_DIR_OR_GIT_DIR [OUT_DIR]}
OUT=${2:-$HERE/build}
DOVECOT_CONFIG=/usr/lib/dovecot/dovecot-config

missing=""
for tool in autoreconf:autoconf automake:automake libtoolize:libtool pkg-config:pkg-config \
    make:build-essential gcc:build-essential; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool#*:}"
done
[ -f "$DOVECOT_CONFIG" ] || missing="$missing dovecot-dev"
if [ -n "$missing" ]; then
    echo "build.sh: installing build dependencies:$missing" >&2
    apt-get install -y $missing >&2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/imaptest-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if git --git-dir="$SRC" rev-parse --verify -q "$PIN^{commit}" >/dev/null 2>&1; then
    git --git-dir="$SRC" archive "$PIN" | tar -x -C "$WORK"
    echo "0.0.0+$PIN" >"$WORK/version"
elif [ -f "$SRC/configure.ac" ] && [ -d "$SRC/src/tests" ]; then
    cp -R "$SRC/." "$WORK/"
    [ -s "$WORK/version" ] ||
        echo "0.0.0+$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)" >"$WORK/version"
else
    echo "build.sh: $SRC is neither an imaptest tree nor a git directory holding $PIN" >&2
    exit 1
fi

cd "$WORK"
if grep -q "imap_parser_params \*params" /usr/include/dovecot/imap-parser.h; then
    sed -i 's/imap_parser_create(\([^;]*\), (size_t)-1);/imap_parser_create(\1, (size_t)-1, NULL);/' \
        src/commands.c src/imap-client.c src/test-parser.c
fi
./autogen.sh >build.log 2>&1 || { tail -20 build.log >&2; exit 1; }
./configure --with-dovecot=/usr/lib/dovecot LDFLAGS="-Wl,-rpath,/usr/lib/dovecot" \
    >>build.log 2>&1 || { tail -20 build.log >&2; exit 1; }
make -j2 >>build.log 2>&1 || { grep -i error build.log | head -20 >&2; exit 1; }

mkdir -p "$OUT"
rm -rf "$OUT/tests"
cp src/imaptest "$OUT/imaptest"
cp -R src/tests "$OUT/tests"
cat version >"$OUT/imaptest.version"
echo "build.sh: $OUT/imaptest and $OUT/tests/ (imaptest $(cat version))"
