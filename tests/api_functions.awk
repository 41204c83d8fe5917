# SPDX-License-Identifier: MIT
# api_functions.awk -- prints the name of every function a header declares
# with AXSTM_API: the first axstm_name( after AXSTM_API, which may sit on a
# later line when a declaration is wrapped.  Comments and preprocessor
# lines (with their continuations) are left out first, so that the
# documentation may quote a declaration without counting as one.  Used by
# check_symbols.sh and check_man.sh.
{
    line = ""
    rest = $0
    while (rest != "") {
        if (incomment) {
            end = index(rest, "*/")
            if (end == 0) { rest = ""; break }
            rest = substr(rest, end + 2)
            incomment = 0
        } else {
            start = index(rest, "/*")
            if (start == 0) { line = line rest; rest = ""; break }
            line = line substr(rest, 1, start - 1) " "
            rest = substr(rest, start + 2)
            incomment = 1
        }
    }
    $0 = line
}
indefine { indefine = /\\$/; next }
/^[ \t]*#/ { indefine = /\\$/; next }
/^[ \t]*AXSTM_API([ \t]|$)/ { decl = ""; open = 1 }
open {
    decl = decl " " $0
    if (index(decl, "(")) {
        if (match(decl, /axstm_[A-Za-z0-9_]*[ \t]*\(/)) {
            name = substr(decl, RSTART, RLENGTH)
            sub(/[ \t]*\($/, "", name)
            print name
        }
        open = 0
    }
}
