"""A real redis-server for the queue tests.

RedisServer starts `redis-server` on a free loopback port with its data in a
temporary directory and the append-only file on with an fsync per write
(--appendonly yes --appendfsync always --save ""), so that a restart, even
after SIGKILL, comes back with every acknowledged write. restart() stops it
(SHUTDOWN, or SIGKILL for a crash) and starts it again on the SAME port and
directory, which is what the reliability tests need: clients keep their URL
and must reconnect on their own.

The `redis_server` fixture yields a started RedisServer and kills it at
teardown; import it into a test module to use it.
"""
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import SLOW, free_port

REDIS_SERVER = os.environ.get("IMAGEN_REDIS_SERVER", shutil.which("redis-server") or "redis-server")


def _encode(*args):
    """One command in the Redis protocol (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RedisServer:
    """One redis-server process; see the module docstring."""

    def __init__(self, directory, port=None):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None
        self.start()

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    # -- lifecycle --------------------------------------------------------
    def start(self, timeout=20.0):
        if not os.path.exists(REDIS_SERVER) and shutil.which(REDIS_SERVER) is None:
            pytest.fail("redis-server not found (set IMAGEN_REDIS_SERVER or install redis-server)")
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
               "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
               "--logfile", self.log_path]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log()}")
            # PING answers -LOADING while the append-only file is replayed.
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING:\n{self.log()}")

    def stop(self, how="shutdown", timeout=20.0):
        """Stops the server: "shutdown" (clean, via SHUTDOWN) or "kill" (SIGKILL,
        a crash; the fsync-always AOF still holds every acknowledged write)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if how == "kill":
            self.proc.kill()
        else:
            try:
                self.command("SHUTDOWN")
            except OSError:
                pass  # the server closes the connection without a reply
        try:
            self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"redis-server did not stop on {how}:\n{self.log()}")

    def restart(self, how="shutdown"):
        self.stop(how)
        self.start()

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    # -- talking to it ------------------------------------------------------
    def command(self, *args, db=0, timeout=5.0):
        """Sends one command and returns the first line of the reply as text
        (enough for PING, SHUTDOWN, DBSIZE and XLEN, whose replies are one line)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout * SLOW) as s:
            data = (_encode("SELECT", db) if db else b"") + _encode(*args)
            s.sendall(data)
            replies = []
            buf = b""
            want = 2 if db else 1
            while len(replies) < want:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\r\n" in buf and len(replies) < want:
                    line, buf = buf.split(b"\r\n", 1)
                    replies.append(line.decode(errors="replace"))
            if len(replies) < want:
                raise ConnectionError("redis closed the connection")
            return replies[-1]

    def ping(self):
        try:
            return self.command("PING", timeout=1.0) == "+PONG"
        except OSError:
            return False

    def int_command(self, *args, db=0):
        reply = self.command(*args, db=db)
        if not reply.startswith(":"):
            raise RuntimeError(f"{args[0]}: unexpected reply {reply!r}")
        return int(reply[1:])


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.close()
