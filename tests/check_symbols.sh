#!/bin/sh
# SPDX-License-Identifier: MIT
# check_symbols.sh -- the shared library must export exactly the functions
# that the installed headers declare with AXSTM_API: nothing missing, nothing
# extra.  The headers are include/axstm.h and the axstm_version.h that
# configure makes in the build tree.
#
# Run by `make check` with top_srcdir and top_builddir in the environment
# (see AM_TESTS_ENVIRONMENT in Makefile.am).  Exit 0 pass, 1 fail, 77 skip.

top_srcdir=${top_srcdir:-.}
top_builddir=${top_builddir:-.}
NM=${NM:-nm}

set -- "$top_srcdir/include/axstm.h" "$top_builddir/include/axstm_version.h"
la="$top_builddir/lib/libaxstm.la"

for header in "$@"; do
    if [ ! -r "$header" ]; then
        echo "check_symbols: cannot read $header"
        exit 1
    fi
done
if [ ! -r "$la" ]; then
    echo "check_symbols: $la is missing (build the library first)"
    exit 1
fi

# libtool records the shared object's name in dlname; it is empty when the
# library was configured with --disable-shared.
dlname=$(sed -n "s/^dlname='\(.*\)'\$/\1/p" "$la")
if [ -z "$dlname" ]; then
    echo "check_symbols: no shared library was built; skipping"
    exit 77
fi
so="$top_builddir/lib/.libs/$dlname"
if [ ! -r "$so" ]; then
    echo "check_symbols: $so is missing"
    exit 1
fi

tmp=${TMPDIR:-/tmp}/check_symbols.$$
mkdir "$tmp" || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# Declared: every function the headers declare with AXSTM_API.
awk -f "$top_srcdir/tests/api_functions.awk" "$@" | LC_ALL=C sort -u > "$tmp/declared"

# Exported: defined text symbols in the dynamic symbol table, without any
# symbol version suffix.
if ! $NM -D --defined-only "$so" > "$tmp/nm"; then
    echo "check_symbols: $NM -D failed on $so"
    exit 1
fi
awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' "$tmp/nm" \
    | LC_ALL=C sort -u > "$tmp/exported"

ndecl=$(wc -l < "$tmp/declared")
nexp=$(wc -l < "$tmp/exported")
echo "check_symbols: $ndecl functions declared in the headers, $nexp exported by $dlname"

if [ "$ndecl" -eq 0 ]; then
    echo "check_symbols: found no AXSTM_API declarations in $*"
    exit 1
fi

LC_ALL=C comm -23 "$tmp/declared" "$tmp/exported" > "$tmp/missing"
LC_ALL=C comm -13 "$tmp/declared" "$tmp/exported" > "$tmp/extra"

status=0
if [ -s "$tmp/missing" ]; then
    echo "check_symbols: declared in the headers but not exported:"
    sed 's/^/  /' "$tmp/missing"
    status=1
fi
if [ -s "$tmp/extra" ]; then
    echo "check_symbols: exported but not declared in the headers:"
    sed 's/^/  /' "$tmp/extra"
    status=1
fi
# Any other kind of dynamic symbol defined by the library (data, weak,
# ...) is a leak of an internal name too.
awk '$2 != "T" && $2 != "A" { print "  " $3 " (" $2 ")" }' "$tmp/nm" > "$tmp/other"
if [ -s "$tmp/other" ]; then
    echo "check_symbols: other symbols defined in the dynamic table:"
    cat "$tmp/other"
    status=1
fi
[ "$status" -eq 0 ] && echo "check_symbols: exported symbols match the headers"
exit "$status"
