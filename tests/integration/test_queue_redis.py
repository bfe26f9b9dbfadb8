"""The Redis Streams queue driver against a real Redis.

The C test binary unit_queue_test_queue_redis (built next to the server,
found from IMAGEN_SERVER_BIN) holds the checks: the whole queue contract
(tests/unit/queue/queue_conformance.h) plus the Redis-specific ones (streams,
pending entries, dead-letter stream). ctest runs it without a Redis, where it
skips; here it gets a fresh redis-server through IMAGEN_TEST_REDIS_URL.

The restart tests publish jobs, restart Redis (clean SHUTDOWN, and SIGKILL,
which the fsync-always append-only file must survive), then pull through the
same open queue handle: no job may be lost, none delivered twice.
"""
import os
import subprocess

import pytest

from conftest import SERVER_BIN, SLOW, WRAPPER
from redisutil import redis_server  # noqa: F401  (fixture)

TEST_BIN = os.path.join(os.path.dirname(os.path.abspath(SERVER_BIN)), "tests", "unit",
                        "unit_queue_test_queue_redis")


def _binary():
    if not os.path.exists(TEST_BIN):
        pytest.fail(f"{TEST_BIN} not found: build the unit_queue_test_queue_redis target")
    return TEST_BIN


def _env(url):
    env = dict(os.environ)
    env["IMAGEN_TEST_REDIS_URL"] = url
    return env


def test_conformance_and_redis_checks(redis_server):  # noqa: F811
    # db 3, not 0: the URL's database number must be honoured too.
    url = redis_server.url(3)
    r = subprocess.run(WRAPPER + [_binary()], env=_env(url), capture_output=True, text=True,
                       timeout=300 * SLOW)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"unit_queue_test_queue_redis against {url} failed ({r.returncode}):\n{out}"
    assert "skipped" not in r.stdout, out
    assert "0 failed" in r.stderr, out
    throughput = [line for line in r.stdout.splitlines() if line.startswith("throughput:")]
    assert throughput, out
    print(throughput[0])
    # Everything went to db 3.
    assert redis_server.int_command("DBSIZE") == 0
    assert redis_server.int_command("DBSIZE", db=3) > 0


@pytest.mark.parametrize("how", ["shutdown", "kill"])
def test_restart_between_publish_and_pull_loses_no_job(redis_server, how):  # noqa: F811
    url = redis_server.url(1)
    n = 25
    proc = subprocess.Popen(WRAPPER + [_binary(), "survive", "rq_restart", str(n)], env=_env(url),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        published = proc.stdout.readline().split()
        assert published[:1] == ["published"] and len(published) == n + 1, \
            f"publishing failed: {published}\n{proc.stderr.read() if proc.poll() is not None else ''}"
        ids = published[1:]
        assert redis_server.int_command("XLEN", "imagen:q:rq_restart", db=1) == n

        redis_server.restart(how)
        # The jobs came back from the append-only file before anyone pulled.
        assert redis_server.int_command("XLEN", "imagen:q:rq_restart", db=1) == n

        out, err = proc.communicate("restarted\n", timeout=60 * SLOW)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"survive failed ({proc.returncode}):\n{out}\n{err}"
    drained = next((line.split()[1:] for line in out.splitlines() if line.startswith("drained")), None)
    assert drained is not None, out
    assert sorted(drained) == sorted(ids)
    # The handle's pooled connection died with the server: one call said
    # UNAVAILABLE and the next reconnected on its own.
    unavailable = next((int(line.split()[1]) for line in out.splitlines() if line.startswith("unavailable")), 0)
    assert unavailable >= 1, f"the restart went unnoticed:\n{out}\n{err}"
    print(f"{how}: {n} jobs survived, {unavailable} UNAVAILABLE answer(s) before reconnecting")
    # Everything ended: the stream and the pending list are empty, nothing is dead.
    assert redis_server.int_command("XLEN", "imagen:q:rq_restart", db=1) == 0
    assert redis_server.int_command("ZCARD", "imagen:state:rq_restart:done", db=1) == n
    assert redis_server.int_command("EXISTS", "imagen:dead:rq_restart", db=1) == 0
