# SPDX-License-Identifier: MIT
"""Builds the extension axstm._axstm for pip, against the libaxstm that
pkg-config finds (an installed one: `make install` first, and point
PKG_CONFIG_PATH at its lib/pkgconfig when the prefix is not a standard
one).  The same sources as the automake build; the metadata is in
pyproject.toml."""

import os
import shlex
import subprocess

from setuptools import Extension, setup


def pkg_config(option):
    try:
        out = subprocess.check_output(["pkg-config", option, "axstm"], text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit("setup.py: pkg-config cannot find axstm (install libaxstm first, "
                         "or set PKG_CONFIG_PATH): %s" % e)
    return shlex.split(out)


cflags = pkg_config("--cflags")
libs = pkg_config("--libs")
lib_dirs = [f[2:] for f in libs if f.startswith("-L")]
here = os.path.dirname(os.path.abspath(__file__))

setup(
    packages=["axstm", "Axon"],
    ext_modules=[
        Extension(
            "axstm._axstm",
            sources=[os.path.relpath(os.path.join(here, "src", name), here)
                     for name in ("module.c", "codec.c", "store.c", "stm.c")],
            depends=["src/pyaxstm.h"],
            include_dirs=[f[2:] for f in cflags if f.startswith("-I")],
            extra_compile_args=[f for f in cflags if not f.startswith("-I")]
            + ["-std=gnu11", "-D_GNU_SOURCE", "-fvisibility=hidden"],
            library_dirs=lib_dirs,
            libraries=[f[2:] for f in libs if f.startswith("-l")],
            # Found where it was installed, whatever ld.so's cache says.
            runtime_library_dirs=lib_dirs,
        )
    ],
)
