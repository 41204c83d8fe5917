# SPDX-License-Identifier: MIT
"""How Python keys become axstm key names, and back.

axstm keys are non-empty C strings of at most KEY_MAX bytes.  A str that is
such a key (as UTF-8) names itself, and the C extension maps it without
calling in here.  Every other hashable key gets a name that begins with the
byte 0xff, which UTF-8 never holds, so the two kinds never collide:

    0xff 'N'                   None
    0xff 'i' <decimal>         a number equal to an int (1, 1.0, True, 1+0j,
                               Fraction(2, 2), Decimal('1.00'): one key, as
                               in a dict)
    0xff 'q' <num>/<den>       any other finite number, exactly ('inf', '-inf')
    0xff 'c' <re> <im>         a complex number with an imaginary part
    0xff 's' <repr>            a str that is not a valid key (empty, a NUL,
                               too long, lone surrogates)
    0xff 'b' <repr>            bytes
    0xff 't' <parts>           a tuple; 0xff 'f' <parts> a frozenset (its
                               parts sorted); parts are "<length>:<name>"
    0xff 'o' <serial>          any other hashable: numbered in this process
    0xff 'h' <sha256>          a name that would be longer than KEY_MAX

The first seven are the same in every process, so processes sharing a store
by address agree on them.  'o' and 'h' names are remembered in this process
(with the key object, so that dump() can show it): another process sees
them as bytes, and an 'o' name means nothing there.  A NaN is not equal to
itself, so, as in a dict, each NaN object is its own 'o' key.
"""

import ast
import decimal
import hashlib
import itertools
import numbers
import threading
from fractions import Fraction

KEY_MAX = 1024
MARK = b"\xff"

_lock = threading.Lock()
_serial = itertools.count(1)
# name -> key for the names that cannot be read back ('o', 'h').
_remembered = {}
# key -> name for keys with no stable encoding ('o').
_objects = {}
# key -> name, for speed; dropped whole when it grows past _CACHE_MAX.
_cache = {}
_CACHE_MAX = 1 << 16


def _number(x):
    """The name body of a number, or None for a NaN."""
    if isinstance(x, numbers.Complex) and not isinstance(x, numbers.Real):
        if x.imag == 0:
            return _number(x.real)
        re, im = _number(x.real), _number(x.imag)
        if re is None or im is None:
            return None
        return b"c" + _parts((re, im))
    if isinstance(x, numbers.Integral):
        return b"i%d" % int(x)
    try:
        f = Fraction(x)
    except (ValueError, OverflowError, TypeError):
        if x != x:
            return None
        return b"qinf" if x > 0 else b"q-inf"
    if f.denominator == 1:
        return b"i%d" % f.numerator
    return b"q%d/%d" % (f.numerator, f.denominator)


def _parts(names):
    return b"".join(b"%d:%s" % (len(n), n) for n in names)


def _body(key):
    """The name of key without its 0xff mark."""
    if key is None:
        return b"N"
    if isinstance(key, str):
        return b"s" + repr(str(key)).encode("utf-8")
    if isinstance(key, bytes):
        return b"b" + repr(bytes(key)).encode("ascii")
    if isinstance(key, (numbers.Number, decimal.Decimal)):
        body = _number(key)
        if body is not None:
            return body
    elif isinstance(key, tuple):
        return b"t" + _parts([_body(k) for k in key])
    elif isinstance(key, frozenset):
        return b"f" + _parts(sorted(_body(k) for k in key))
    hash(key)  # unhashable keys fail here, as in a dict
    with _lock:
        name = _objects.get(key)
        if name is None:
            name = MARK + b"o%d" % next(_serial)
            _objects[key] = name
            _remembered[name] = key
    return name[1:]


def key_name(key):
    """The axstm name (bytes) of any hashable key."""
    try:
        return _cache[key]
    except KeyError:
        pass
    name = None
    if isinstance(key, str):
        try:
            utf8 = key.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            utf8 = b""
        if 0 < len(utf8) <= KEY_MAX and b"\0" not in utf8:
            name = utf8
    if name is None:
        name = MARK + _body(key)
    if len(name) > KEY_MAX:
        long_name = name
        name = MARK + b"h" + hashlib.sha256(long_name).hexdigest().encode("ascii")
        with _lock:
            _remembered[name] = key
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[key] = name
    return name


def _split(data):
    out = []
    while data:
        length, _, rest = data.partition(b":")
        n = int(length)
        out.append(rest[:n])
        data = rest[n:]
    return out


def _read(body):
    tag, rest = body[:1], body[1:]
    if tag == b"N":
        return None
    if tag == b"i":
        return int(rest)
    if tag == b"q":
        if rest in (b"inf", b"-inf"):
            return float(rest)
        f = Fraction(rest.decode("ascii"))
        return float(f) if Fraction(float(f)) == f else f
    if tag == b"c":
        re, im = (_read(p) for p in _split(rest))
        return complex(re, im)
    if tag in (b"s", b"b"):
        return ast.literal_eval(rest.decode("utf-8"))
    if tag == b"t":
        return tuple(_read(p) for p in _split(rest))
    if tag == b"f":
        return frozenset(_read(p) for p in _split(rest))
    key = _remembered.get(MARK + body, _missing)
    if key is _missing:
        raise KeyError(body)
    return key


_missing = object()


def key_from_name(name):
    """The key a name stands for: the key given to key_name in this process,
    an equal one, or, for a name this process cannot read (written by a C
    program, or an 'o'/'h' name of another process), the name as bytes."""
    name = bytes(name)
    if not name.startswith(MARK):
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            return name
    try:
        return _read(name[1:])
    except (KeyError, ValueError, SyntaxError):
        return name
