# SPDX-License-Identifier: MIT
"""Helpers shared by the Python tests: capturing output, memory figures,
and a redis-server of each test's own."""

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest


# The suite runs a second time on a store kept in Redis (on_store.py),
# which sets AXSTM_TEST_STORE; tests of what only an in-process store has
# are skipped then.
ON_REMOTE_STORE = bool(os.environ.get("AXSTM_TEST_STORE"))


def local_only(why):
    """Skips a test (or a class of them) on the remote pass, saying why."""
    return unittest.skipIf(ON_REMOTE_STORE, "in-process store only: " + why)


@contextlib.contextmanager
def captured_stdout():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield buf


def rss_bytes():
    """Resident memory of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """A redis-server on a unix socket in a temporary directory, started
    for one test and killed by its pid at the end."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="axstm-py-redis-")
        self.sock = os.path.join(self.dir, "sock")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", "0", "--unixsocket", self.sock, "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait until the server answers, not for an amount of time; the
        # watchdog only turns a server that never starts into a failure.
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.005)

    def _answers(self):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(self.sock)
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def address(self, prefix="t:"):
        return "redis+unix://%s?prefix=%s" % (self.sock, prefix)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisTestCase(unittest.TestCase):
    """Each test gets a fresh server (self.redis), or is skipped where
    redis-server is not installed."""

    def setUp(self):
        if REDIS_SERVER is None:
            self.skipTest("redis-server is not installed")
        self.redis = RedisServer()
        self.addCleanup(self.redis.stop)
