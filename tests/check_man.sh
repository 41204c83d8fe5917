#!/bin/sh
# SPDX-License-Identifier: MIT
# check_man.sh -- the manual pages in man/ lint clean and cover the
# installed headers exactly: every function that they declare with AXSTM_API
# has a page of its own name (its family's page, or a one-line page sourcing
# it) whose NAME section lists it, and no page names a function that they
# lack.  The headers are include/axstm.h and the axstm_version.h that
# configure makes in the build tree.
#
# Run by `make check` with top_srcdir, top_builddir and man_pages (the pages
# Makefile.am installs, relative to top_srcdir) in the environment (see
# AM_TESTS_ENVIRONMENT in Makefile.am).  Pages are linted with mandoc, or
# with groff where mandoc is missing; MANDOC= or GROFF= (set, but empty)
# leaves that tool out.  Exit 0 pass, 1 fail, 77 skip: no linter was found,
# and the coverage checks, which need none, passed.

top_srcdir=${top_srcdir:-.}
top_builddir=${top_builddir:-.}
MANDOC=${MANDOC-mandoc}
GROFF=${GROFF-groff}

set -- "$top_srcdir/include/axstm.h" "$top_builddir/include/axstm_version.h"
mandir="$top_srcdir/man"
spdx='.\" SPDX-License-Identifier: MIT'

for header in "$@"; do
    if [ ! -r "$header" ]; then
        echo "check_man: cannot read $header"
        exit 1
    fi
done
if [ ! -d "$mandir" ]; then
    echo "check_man: $mandir is missing"
    exit 1
fi

tmp=${TMPDIR:-/tmp}/check_man.$$
mkdir "$tmp" || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

status=0
fail() {
    echo "check_man: $*"
    status=1
}

# Declared: every function the headers declare with AXSTM_API.
awk -f "$top_srcdir/tests/api_functions.awk" "$@" | LC_ALL=C sort -u > "$tmp/declared"
if [ ! -s "$tmp/declared" ]; then
    echo "check_man: found no AXSTM_API declarations in $*"
    exit 1
fi

# The pages: those in man/, which must be the ones Makefile.am installs.
(cd "$mandir" && ls) | grep '\.[1-9]$' | LC_ALL=C sort > "$tmp/pages"
if [ -n "${man_pages+set}" ]; then
    for p in $man_pages; do
        echo "${p##*/}"
    done | LC_ALL=C sort > "$tmp/installed"
    LC_ALL=C comm -23 "$tmp/pages" "$tmp/installed" | while read -r p; do
        echo "check_man: man/$p is not in dist_man_MANS (Makefile.am)"
    done > "$tmp/unlisted"
    LC_ALL=C comm -13 "$tmp/pages" "$tmp/installed" | while read -r p; do
        echo "check_man: man/$p is in dist_man_MANS but missing"
    done >> "$tmp/unlisted"
    if [ -s "$tmp/unlisted" ]; then
        cat "$tmp/unlisted"
        status=1
    fi
fi

# Each page is either a family page, or a link page: the SPDX line and one
# `.so man3/FAMILY.3` line naming a family page.  Family pages list their
# functions in NAME: "page name" lines go to $tmp/names.  Link pages go to
# $tmp/links as "page family", with family "-" when the link is broken
# (reported here, and not again below).
: > "$tmp/names"
: > "$tmp/families"
: > "$tmp/links"
: > "$tmp/own"
while read -r page; do
    f="$mandir/$page"
    name=${page%.*}
    sect=${page##*.}
    if [ "$(sed -n 1p "$f")" != "$spdx" ]; then
        fail "$page: the first line is not the SPDX line"
    fi
    if grep -q '^\.so' "$f"; then
        target=$(sed -n 's|^\.so man\([1-9]\)/\([^ /]*\)$|\1 \2|p' "$f")
        tsect=${target%% *}
        tpage=${target#* }
        found=-
        if [ "$(wc -l < "$f")" -ne 2 ] || [ -z "$target" ]; then
            fail "$page: a link page is the SPDX line and one '.so manN/PAGE.N' line"
        elif [ "$tpage" != "${tpage%.$tsect}.$tsect" ]; then
            fail "$page: .so man$tsect/$tpage: the page is not of section $tsect"
        elif ! grep -qx "$tpage" "$tmp/pages"; then
            fail "$page: .so man$tsect/$tpage: no such page in man/"
        elif grep -q '^\.so' "$mandir/$tpage"; then
            fail "$page: .so man$tsect/$tpage: that is a link page too"
        else
            found=$tpage
        fi
        echo "$page $found" >> "$tmp/links"
        continue
    fi
    echo "$page" >> "$tmp/families"
    [ "$sect" = 3 ] && echo "$page $name" >> "$tmp/own"
    th=$(sed -n 's/^\.TH[ \t]\{1,\}\([^ \t]*\)[ \t]\{1,\}\([^ \t]*\).*/\1 \2/p' "$f")
    want="$(echo "$name" | tr '[:lower:]' '[:upper:]') $sect"
    if [ "$th" != "$want" ]; then
        fail "$page: .TH says '$th', expected '$want'"
    fi
    # NAME: "name, name, ... \- what they do", over one line or several.
    awk -v page="$page" '
        /^\.SH/ { inname = ($0 ~ /^\.SH[ \t]+"?NAME"?[ \t]*$/); next }
        inname && !/^\./ { text = text " " $0 }
        END {
            if (!sub(/\\-.*/, "", text))
                exit 1
            n = split(text, names, /[ \t,]+/)
            for (i = 1; i <= n; i++)
                if (names[i] != "")
                    print page, names[i]
        }
    ' "$f" >> "$tmp/names" || fail "$page: no 'name \\- description' line in NAME"
done < "$tmp/pages"

# Section 3 names every function of the headers and nothing else; each has a
# page of its own name, and a link page's target lists it.
awk '$1 ~ /\.3$/ { print $2 }' "$tmp/names" | LC_ALL=C sort > "$tmp/named"
LC_ALL=C sort -u "$tmp/named" | LC_ALL=C comm -23 - "$tmp/declared" | while read -r n; do
    echo "check_man: $n is named in a page but declared in no header"
done > "$tmp/bad"
LC_ALL=C sort "$tmp/named" | uniq -d | while read -r n; do
    echo "check_man: $n is named by more than one page"
done >> "$tmp/bad"
while read -r fn; do
    if ! grep -qx "$fn.3" "$tmp/pages"; then
        echo "check_man: $fn has no page man/$fn.3"
        continue
    fi
    family=$(awk -v p="$fn.3" '$1 == p { print $2 }' "$tmp/links")
    family=${family:-$fn.3}
    [ "$family" = - ] && continue
    if ! grep -qx "$family $fn" "$tmp/names"; then
        echo "check_man: $fn is not listed in the NAME section of $family"
    fi
done < "$tmp/declared" >> "$tmp/bad"
while read -r page family; do
    if [ "$family" != - ] && ! grep -qx "$family ${page%.*}" "$tmp/names"; then
        echo "check_man: $page sources $family, whose NAME does not list ${page%.*}"
    fi
done < "$tmp/links" >> "$tmp/bad"
while read -r line; do
    grep -qx "$line" "$tmp/names" ||
        echo "check_man: ${line% *}: its NAME section does not list ${line#* }"
done < "$tmp/own" >> "$tmp/bad"

# Every reference to an axstm page ("axstm_x (3)") leads to one, and the
# overview refers to every family page.
while read -r page; do
    grep -o 'axstm[A-Za-z0-9_]* ([1-9])' "$mandir/$page" | sed 's/ (\(.\))$/.\1/' | sort -u |
    while read -r ref; do
        grep -qx "$ref" "$tmp/pages" || echo "check_man: $page refers to $ref, which does not exist"
    done
done < "$tmp/pages" >> "$tmp/bad"
if grep -qx 'axstm.7' "$tmp/pages"; then
    while read -r page; do
        case $page in
        *.3)
            grep -q "^\.BR ${page%.3} (3)" "$mandir/axstm.7" ||
                echo "check_man: axstm.7 does not refer to ${page%.3}(3)" ;;
        esac
    done < "$tmp/families" >> "$tmp/bad"
fi
if [ -s "$tmp/bad" ]; then
    cat "$tmp/bad"
    status=1
fi

npages=$(wc -l < "$tmp/pages")
nfam=$(wc -l < "$tmp/families")
ndecl=$(wc -l < "$tmp/declared")
echo "check_man: $npages pages ($nfam with text, the rest links) for $ndecl functions"

# Lint the family pages; a link page is the two lines checked above.  Any
# message at all fails the page: mandoc -W warning reports warnings and
# worse, and groff -ww every warning it has.
lint=
if [ -n "$MANDOC" ] && command -v "$MANDOC" > /dev/null 2>&1; then
    lint=mandoc
elif [ -n "$GROFF" ] && command -v "$GROFF" > /dev/null 2>&1; then
    lint=groff
fi
if [ -z "$lint" ]; then
    if [ "$status" -ne 0 ]; then
        exit 1
    fi
    echo "check_man: neither mandoc nor groff found: pages not linted; skipping"
    exit 77
fi
while read -r page; do
    if [ "$lint" = mandoc ]; then
        "$MANDOC" -Tlint -W warning "$mandir/$page" > "$tmp/lint" 2>&1
    else
        "$GROFF" -ww -z -man "$mandir/$page" > "$tmp/lint" 2>&1
    fi
    rc=$?
    if [ "$rc" -ne 0 ] || [ -s "$tmp/lint" ]; then
        fail "$page: $lint reports (status $rc):"
        sed 's/^/  /' "$tmp/lint"
    fi
done < "$tmp/families"
[ "$status" -eq 0 ] && echo "check_man: every page lints clean with $lint and the pages match the headers"
exit "$status"
