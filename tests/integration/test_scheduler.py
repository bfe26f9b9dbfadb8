"""Scheduling over real HTTP (spec §5): the default scheduler, dynamic batch
formation (§5.3 worked examples, with IMAGEN_DELAY_SCHEDULER holding batch
formation until every request is queued so composition is exact), queue
delay, priority levels, queue policies (size limit, timeouts, DELAY),
preserve_ordering, instance concurrency, shape agreement inside a batch,
client cancellation and model warmup.

Models are imageops `timed` (identity that sleeps fixed_us + per_item_us x
items) and `identity`; a "blocker" is a large request on a per-item timed
model that keeps the only instance busy while others queue behind it."""
import time

import pytest

from conftest import SLOW
from schedutil import (Call, assert_echo, assert_error, batch_sizes, failures, identity_model, index_entry,
                       infer, model_metric, model_stats, raw_infer, start_blocker, submit_in_order,
                       timed_model, wait_for, wait_pending, write_model)


def hold(n):
    """Environment that holds batch formation until n requests are queued."""
    return {"env": {"IMAGEN_DELAY_SCHEDULER": str(n)}}


# ---------------------------------------------------------------------------
# Default scheduler (no dynamic_batching)
# ---------------------------------------------------------------------------

def test_default_scheduler_runs_each_request_alone(repo, server_factory):
    # Four batch-2 requests all queued at once behind a busy instance: they
    # would fit one batch of 8, but without dynamic_batching each runs alone.
    timed_model(repo, "plain", fixed_us=0, per_item_us=60000)
    s = server_factory(repo)
    order = []
    blocker = start_blocker(s, "plain", batch=8, order=order)
    calls = submit_in_order(s, "plain", [dict(tag=i, batch=2) for i in range(1, 5)], order)
    for c in calls:
        assert_echo(c.result(), batch=2, value=c.tag)
    assert_echo(blocker.result(), batch=8, value=1)
    assert order == ["blocker", 1, 2, 3, 4], "not executed one by one in arrival order"
    assert batch_sizes(s, "plain") == {8: 1, 2: 4}
    st = model_stats(s, "plain")
    assert st["execution_count"] == 5
    assert st["inference_count"] == 16
    assert st["inference_stats"]["success"]["count"] == 5


# ---------------------------------------------------------------------------
# Dynamic batch formation (§5.3)
# ---------------------------------------------------------------------------

def test_greedy_batches_fill_max_batch_size(repo, server_factory):
    # Default preferred size = max_batch_size 16, no delay: 20 queued
    # size-1 requests execute as 16 then 4.
    identity_model(repo, "greedy", max_batch_size=16, extra="dynamic_batching { }")
    s = server_factory(repo, **hold(20))
    calls = [Call(s, "greedy", tag=i) for i in range(1, 21)]
    for c in calls:
        assert_echo(c.result(), value=c.tag)
    assert batch_sizes(s, "greedy") == {16: 1, 4: 1}
    st = model_stats(s, "greedy")
    assert (st["execution_count"], st["inference_count"]) == (2, 20)
    assert st["inference_stats"]["success"]["count"] == 20
    assert model_metric(s, "nv_inference_exec_count", "greedy") == 2
    assert model_metric(s, "nv_inference_count", "greedy") == 20
    assert model_metric(s, "nv_inference_request_success", "greedy") == 20


def test_preferred_sizes_cut_at_longest_prefix_not_over_largest(repo, server_factory):
    # P = {4, 8}, sizes 3,3,3: 3+3+3 = 9 > 8, so the cut is recorded at 6 and
    # the batch is the first two requests; the third runs alone.
    identity_model(repo, "pref", max_batch_size=16,
                   extra="dynamic_batching { preferred_batch_size: [ 4, 8 ] }")
    s = server_factory(repo, **hold(3))
    calls = [Call(s, "pref", tag=i, batch=3) for i in range(1, 4)]
    for c in calls:
        assert_echo(c.result(), batch=3, value=c.tag)
    assert batch_sizes(s, "pref") == {6: 1, 3: 1}
    st = model_stats(s, "pref")
    assert (st["execution_count"], st["inference_count"]) == (2, 9)


def test_first_preferred_size_reached_is_kept(repo, server_factory):
    # P = {4, 8}, sizes 4,3,3 in queue order: 4 is preferred; 7 is not and
    # 10 > 8, so the first batch is the size-4 request alone, then 3+3.
    identity_model(repo, "pref", max_batch_size=16,
                   extra="dynamic_batching { preferred_batch_size: [ 4, 8 ] }")
    s = server_factory(repo, **hold(3))
    calls = submit_in_order(s, "pref", [dict(tag=1, batch=4), dict(tag=2, batch=3), dict(tag=3, batch=3)], [])
    for c in calls:
        assert_echo(c.result(), batch=c.batch, value=c.tag)
    assert batch_sizes(s, "pref") == {4: 1, 6: 1}


def test_requests_are_never_split_across_batches(repo, server_factory):
    # max_batch_size 8, sizes 3 then 6: 9 does not fit, and the 6 is not
    # split to fill the first batch.
    identity_model(repo, "whole", max_batch_size=8, extra="dynamic_batching { }")
    s = server_factory(repo, **hold(2))
    calls = submit_in_order(s, "whole", [dict(tag=1, batch=3), dict(tag=2, batch=6)], [])
    for c in calls:
        assert_echo(c.result(), batch=c.batch, value=c.tag)
    assert batch_sizes(s, "whole") == {3: 1, 6: 1}


def test_batching_disabled_when_max_batch_size_zero(repo, server_factory):
    identity_model(repo, "nobatch", max_batch_size=0, dims="[ 2 ]", extra="dynamic_batching { }")
    s = server_factory(repo, **hold(4))
    calls = [Call(s, "nobatch", tag=i, batched=False) for i in range(1, 5)]
    for c in calls:
        assert_echo(c.result(), value=c.tag, batched=False)
    assert batch_sizes(s, "nobatch") == {1: 4}
    st = model_stats(s, "nobatch")
    assert (st["execution_count"], st["inference_count"]) == (4, 4)


def test_request_larger_than_max_batch_size_is_rejected(repo, server_factory):
    identity_model(repo, "small", max_batch_size=4, extra="dynamic_batching { }")
    s = server_factory(repo)
    assert_error(infer(s, "small", batch=5), 400, "batch-size must be <= 4", "'small'")
    assert_echo(infer(s, "small", batch=4), batch=4)
    st = model_stats(s, "small")
    assert (st["execution_count"], st["inference_count"]) == (1, 4)


@pytest.mark.timing
@pytest.mark.parametrize("delay_us,expected", [(0, {1: 1, 2: 1}), (800000, {3: 1})], ids=["no-delay", "delay"])
def test_queue_delay_lets_partial_batch_grow(repo, server_factory, delay_us, expected):
    # A 300 ms model. Without a queue delay the first request runs alone at
    # once and the next two, queued while it executes, batch behind it; with
    # an 800 ms delay the first one waits and all three form one batch.
    timed_model(repo, "delayed", fixed_us=300000,
                extra=f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}")
    s = server_factory(repo)
    first = Call(s, "delayed", tag=1)
    time.sleep(0.05 * SLOW)
    base = 1 if delay_us else 0
    wait_pending(s, "delayed", base)
    calls = [first]
    for i in (2, 3):
        calls.append(Call(s, "delayed", tag=i))
        wait_pending(s, "delayed", base + i - 1)
    assert not first.done(), "the first request finished before the others were queued"
    for c in calls:
        assert_echo(c.result(), value=c.tag)
    assert batch_sizes(s, "delayed") == expected
    if delay_us:
        assert first.elapsed >= 0.75, "the first request did not wait for the queue delay"
        queue = model_stats(s, "delayed")["inference_stats"]["queue"]
        assert queue["count"] == 3
        assert queue["ns"] >= 0.75e9, "queue time in /stats does not include the queue delay"
    else:
        assert first.elapsed < 0.7, "the first request waited although there is no queue delay"


@pytest.mark.parametrize("delay_us,gap,expected", [
    (600000, 0.0, {2: 1, 1: 1}),     # delay not exceeded: cut at the preferred size 2
    (100000, 0.25, {3: 1}),          # delay exceeded: everything pending goes
], ids=["fresh", "expired"])
def test_preferred_cut_applies_only_before_queue_delay_expires(repo, server_factory, delay_us, gap, expected):
    # P = {2}, max_batch_size 8, three size-1 requests released together.
    # While the oldest is younger than the delay the batch is cut at 2 (the
    # third waits out its own delay); once the oldest has waited longer than
    # the delay, all three pending requests execute together (§5.3 step 4).
    identity_model(repo, "cut", max_batch_size=8, extra=f"""
dynamic_batching {{ preferred_batch_size: [ 2 ] max_queue_delay_microseconds: {delay_us} }}""")
    s = server_factory(repo, **hold(3))
    calls = submit_in_order(s, "cut", [dict(tag=1), dict(tag=2)], [])
    wait_pending(s, "cut", 2)
    time.sleep(gap * SLOW)
    calls.append(Call(s, "cut", tag=3))
    for c in calls:
        assert_echo(c.result(), value=c.tag)
    assert batch_sizes(s, "cut") == expected
    if len(expected) == 2:
        assert max(c.elapsed for c in calls[:2]) < 0.4, "the preferred batch waited for the queue delay"
        assert calls[2].elapsed >= 0.5, "the remaining request did not wait for its queue delay"


def test_reaching_preferred_size_ends_queue_delay(repo, server_factory):
    # A 10 s queue delay: three size-1 requests wait; the fourth makes the
    # preferred size 4 and the batch leaves at once.
    identity_model(repo, "pref4", max_batch_size=8,
                   extra="dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 10000000 }")
    s = server_factory(repo)
    first = submit_in_order(s, "pref4", [dict(tag=i) for i in range(1, 4)], [])
    time.sleep(0.2 * SLOW)
    assert not any(c.done() for c in first), "a partial batch left before its queue delay"
    last = Call(s, "pref4", tag=4)
    for c in first + [last]:
        assert_echo(c.result(), value=c.tag)
    assert last.elapsed < 2.0, "the preferred batch size did not end the queue delay"
    assert batch_sizes(s, "pref4") == {4: 1}


# ---------------------------------------------------------------------------
# Priority levels (§5.6)
# ---------------------------------------------------------------------------

PRIORITY_CFG = "dynamic_batching { priority_levels: 2 default_priority_level: 2 }"


def test_higher_priority_level_is_served_first(repo, server_factory):
    # Batch formation held until all four are queued, then one request per
    # batch (max_batch_size 1): level 1 drains before level 2, FIFO inside.
    timed_model(repo, "prio", fixed_us=30000, max_batch_size=1, extra=PRIORITY_CFG)
    s = server_factory(repo, **hold(4))
    order = []
    calls = submit_in_order(s, "prio", [
        dict(tag="low1", params={"priority": 2}), dict(tag="low2", params={"priority": 2}),
        dict(tag="high1", params={"priority": 1}), dict(tag="high2", params={"priority": 1})], order)
    for c in calls:
        assert_echo(c.result())
    assert order == ["high1", "high2", "low1", "low2"]


def test_batches_are_filled_in_priority_order(repo, server_factory):
    # max_batch_size 4, queue order low(3) low(2) high(1). Priority order is
    # high(1)+low(3) = 4, then low(2); FIFO would have given 3, then 2+1.
    identity_model(repo, "prio", max_batch_size=4, extra=PRIORITY_CFG)
    s = server_factory(repo, **hold(3))
    calls = submit_in_order(s, "prio", [dict(tag=1, batch=3), dict(tag=2, batch=2),
                                        dict(tag=3, batch=1, params={"priority": 1})], [])
    for c in calls:
        assert_echo(c.result(), batch=c.batch, value=c.tag)
    assert batch_sizes(s, "prio") == {4: 1, 2: 1}


def test_priority_zero_or_out_of_range_uses_default_level(repo, server_factory):
    timed_model(repo, "prio", fixed_us=30000, max_batch_size=1, extra=PRIORITY_CFG)
    s = server_factory(repo, **hold(4))
    order = []
    calls = submit_in_order(s, "prio", [
        dict(tag="zero"), dict(tag="three", params={"priority": 3}),
        dict(tag="one", params={"priority": 1}), dict(tag="two", params={"priority": 2})], order)
    for c in calls:
        assert_echo(c.result())
    assert order == ["one", "zero", "three", "two"]


# ---------------------------------------------------------------------------
# Queue policy (§5.2 step 5, §5.7)
# ---------------------------------------------------------------------------

def test_full_queue_rejects_with_503_and_counts_rejected(repo, server_factory):
    timed_model(repo, "bounded", fixed_us=0, per_item_us=50000,
                extra="dynamic_batching { default_queue_policy { max_queue_size: 2 } }")
    s = server_factory(repo)
    blocker = start_blocker(s, "bounded", batch=8)
    queued = submit_in_order(s, "bounded", [dict(tag=1), dict(tag=2)], [])
    wait_pending(s, "bounded", 2)
    t0 = time.monotonic()
    r = infer(s, "bounded", value=3)
    assert time.monotonic() - t0 < 0.25, "a request over max_queue_size was not rejected at once"
    assert_error(r, 503, "Exceeds maximum queue size")
    assert not blocker.done()
    for c in queued:
        assert_echo(c.result(), value=c.tag)
    assert_echo(blocker.result(), batch=8)
    assert failures(s, "bounded", "REJECTED") == 1
    assert failures(s, "bounded", "CANCELED") == 0
    assert model_metric(s, "nv_inference_request_success", "bounded") == 3
    st = model_stats(s, "bounded")
    assert st["inference_stats"]["fail"]["count"] == 1
    assert st["inference_stats"]["success"]["count"] == 3


def test_max_queue_size_is_per_priority_level(repo, server_factory):
    # Level 1 holds at most one request; level 2 (default policy) is unbounded.
    timed_model(repo, "levels", fixed_us=0, per_item_us=60000, extra="""
dynamic_batching {
  priority_levels: 2 default_priority_level: 2
  priority_queue_policy { key: 1 value { max_queue_size: 1 } }
}""")
    s = server_factory(repo)
    blocker = start_blocker(s, "levels", batch=8, tag="blocker")
    queued = submit_in_order(s, "levels", [dict(tag=1, params={"priority": 1}), dict(tag=2), dict(tag=3)], [])
    wait_pending(s, "levels", 3)
    assert_error(infer(s, "levels", value=4, params={"priority": 1}), 503, "Exceeds maximum queue size")
    for c in queued:
        assert_echo(c.result(), value=c.tag)
    assert_echo(blocker.result(), batch=8)
    assert failures(s, "levels", "REJECTED") == 1
    assert model_metric(s, "nv_inference_request_success", "levels") == 4


def test_queue_timeout_rejects_with_503(repo, server_factory):
    # 100 ms queue timeout behind a 400 ms execution.
    timed_model(repo, "expiring", fixed_us=0, per_item_us=50000, extra="""
dynamic_batching { default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 100000 } }""")
    s = server_factory(repo)
    blocker = start_blocker(s, "expiring", batch=8)
    t0 = time.monotonic()
    r = infer(s, "expiring", value=2)
    elapsed = time.monotonic() - t0
    assert_error(r, 503, "Request timeout expired")
    assert 0.08 <= elapsed < 0.3 * SLOW, elapsed
    assert not blocker.done(), "the request was rejected only after the instance became free"
    assert_echo(blocker.result(), batch=8)
    assert failures(s, "expiring", "REJECTED") == 1
    assert model_metric(s, "nv_inference_request_success", "expiring") == 1
    st = model_stats(s, "expiring")
    assert st["inference_stats"]["fail"]["count"] == 1
    assert st["execution_count"] == 1


@pytest.mark.parametrize("default_us,allow,request_us,status,lo,hi", [
    (400000, True, 50000, 503, 0.03, 0.3),       # a shorter request timeout wins
    (400000, True, 10000000, 503, 0.3, 0.75),    # a longer one is ignored
    (400000, False, 50000, 503, 0.3, 0.75),      # no override without allow_timeout_override
    (0, True, 50000, 200, 0.5, 5.0),             # cannot add a timeout to a zero default
], ids=["shorter-wins", "longer-ignored", "override-not-allowed", "zero-default-ignores-override"])
def test_timeout_override_only_shortens(repo, server_factory, default_us, allow, request_us, status, lo, hi):
    timed_model(repo, "override", fixed_us=0, per_item_us=100000, extra=f"""
dynamic_batching {{ default_queue_policy {{ timeout_action: REJECT default_timeout_microseconds: {default_us}
                                           allow_timeout_override: {str(allow).lower()} }} }}""")
    s = server_factory(repo)
    blocker = start_blocker(s, "override", batch=8)  # 800 ms
    t0 = time.monotonic()
    r = infer(s, "override", value=2, params={"timeout": request_us})
    elapsed = time.monotonic() - t0
    if status == 503:
        assert_error(r, 503, "Request timeout expired")
    else:
        assert_echo(r, value=2)
    assert lo <= elapsed < hi * SLOW, elapsed
    assert_echo(blocker.result(), batch=8)
    assert failures(s, "override", "REJECTED") == (1 if status == 503 else 0)


def test_delay_action_moves_expired_request_behind_others(repo, server_factory):
    # A's 50 ms timeout expires while it waits; under DELAY it is moved behind
    # B (queued later, 10 s default timeout) and still executes. Batch size 5
    # each, so A and B (max_batch_size 8) never share a batch.
    timed_model(repo, "delaying", fixed_us=0, per_item_us=50000, extra="""
dynamic_batching { default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 10000000
                                          allow_timeout_override: true } }""")
    s = server_factory(repo)
    order = []
    blocker = start_blocker(s, "delaying", batch=8, order=order)  # 400 ms
    a = Call(s, "delaying", "A", order, batch=5, value=1, params={"timeout": 50000})
    wait_pending(s, "delaying", 1)
    time.sleep(0.1 * SLOW)
    b = Call(s, "delaying", "B", order, batch=5, value=2)
    wait_pending(s, "delaying", 2)
    assert not blocker.done(), "the blocking request finished too early for the test to mean anything"
    assert_echo(a.result(), batch=5, value=1)
    assert_echo(b.result(), batch=5, value=2)
    assert_echo(blocker.result(), batch=8)
    assert order == ["blocker", "B", "A"]
    assert failures(s, "delaying", "REJECTED") == 0
    assert batch_sizes(s, "delaying") == {8: 1, 5: 2}


# ---------------------------------------------------------------------------
# preserve_ordering (§5.5) and instances (§5.8)
# ---------------------------------------------------------------------------

@pytest.mark.timing
@pytest.mark.parametrize("preserve", [True, False], ids=["preserve", "no-preserve"])
def test_preserve_ordering_releases_responses_in_order(repo, server_factory, preserve):
    # Two instances. A (batch 8, 320 ms) starts first on one instance; B
    # (batch 1, 40 ms) starts 50 ms later on the other and finishes first.
    timed_model(repo, "ordered", fixed_us=0, per_item_us=40000, extra=f"""
instance_group [ {{ count: 2, kind: KIND_CPU }} ]
dynamic_batching {{ preserve_ordering: {str(preserve).lower()} }}""")
    s = server_factory(repo)
    order = []
    a = Call(s, "ordered", "A", order, batch=8, value=1)
    time.sleep(0.05 * SLOW)
    b = Call(s, "ordered", "B", order, batch=1, value=2)
    assert_echo(a.result(), batch=8, value=1)
    assert_echo(b.result(), batch=1, value=2)
    # Both responses leave the server back to back when A finishes, so the
    # order in which two client threads wake up is not evidence: compare
    # when B's response arrived with A's 320 ms execution instead.
    b_done = b.t_end - a.t_start
    if preserve:
        assert b_done >= 0.3, f"B's response was released {b_done:.3f} s after A started, before A finished"
        assert b.t_end >= a.t_end - 0.05, (a.t_end, b.t_end)
    else:
        assert b_done < 0.25, f"B's response took {b_done:.3f} s although its instance was idle"
        assert order == ["B", "A"]
    assert batch_sizes(s, "ordered") == {8: 1, 1: 1}


@pytest.mark.parametrize("count", [1, 2])
def test_instance_count_sets_concurrent_executions(repo, server_factory, count):
    timed_model(repo, "parallel", fixed_us=300000,
                extra=f"instance_group [ {{ count: {count}, kind: KIND_CPU }} ]")
    s = server_factory(repo)
    t0 = time.monotonic()
    calls = [Call(s, "parallel", tag=i) for i in (1, 2)]
    for c in calls:
        assert_echo(c.result(), value=c.tag)
    last_end = max(c.t_end for c in calls) - t0
    if count == 2:
        assert last_end < 0.55 * SLOW, f"two instances did not execute concurrently ({last_end:.3f} s)"
    else:
        assert last_end >= 0.55, f"one instance executed two requests at once ({last_end:.3f} s)"
    st = model_stats(s, "parallel")
    assert st["execution_count"] == 2
    assert batch_sizes(s, "parallel") == {1: 2}


# ---------------------------------------------------------------------------
# Shapes inside one batch (§5.3 step 3)
# ---------------------------------------------------------------------------

def test_requests_with_different_shapes_never_share_a_batch(repo, server_factory):
    # Variable dim [-1]: queue order widths 2,2,3,3,2 -> batches [2,2] [3,3] [2].
    identity_model(repo, "varlen", max_batch_size=8, extra="dynamic_batching { }")
    s = server_factory(repo, **hold(5))
    widths = [2, 2, 3, 3, 2]
    calls = submit_in_order(s, "varlen", [dict(tag=i + 1, width=w) for i, w in enumerate(widths)], [])
    for c in calls:
        assert_echo(c.result(), width=c.width, value=c.tag)
    assert batch_sizes(s, "varlen") == {2: 2, 1: 1}
    assert model_stats(s, "varlen")["execution_count"] == 3


def test_ragged_input_batches_different_shapes(repo, server_factory):
    cfg = """
name: "ragged"
backend: "imageops"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
parameters { key: "operation" value: { string_value: "identity" } }
dynamic_batching { }
"""
    write_model(repo, "ragged", cfg)
    s = server_factory(repo, **hold(5))
    widths = [2, 2, 3, 3, 2]
    calls = submit_in_order(s, "ragged", [dict(tag=i + 1, width=w) for i, w in enumerate(widths)], [])
    for c in calls:
        assert_echo(c.result(), width=c.width, value=c.tag)
    assert batch_sizes(s, "ragged") == {5: 1}


# ---------------------------------------------------------------------------
# Client cancellation (§5.7)
# ---------------------------------------------------------------------------

def test_client_disconnect_while_queued_cancels_request(repo, server_factory):
    timed_model(repo, "cancel", fixed_us=0, per_item_us=50000, extra="dynamic_batching { }")
    s = server_factory(repo)
    blocker = start_blocker(s, "cancel", batch=8)  # 400 ms
    sock = raw_infer(s.http_port, "cancel", {"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 2], "data": [5, 5]}]})
    wait_pending(s, "cancel", 1)
    sock.close()
    wait_for(lambda: failures(s, "cancel", "CANCELED") == 1, timeout=5.0, what="CANCELED failure count 1")
    assert_echo(blocker.result(), batch=8)
    wait_for(lambda: model_metric(s, "nv_inference_pending_request_count", "cancel") == 0, what="empty queue")
    assert model_metric(s, "nv_inference_request_success", "cancel") == 1
    assert failures(s, "cancel", "REJECTED") == 0
    st = model_stats(s, "cancel")
    assert st["execution_count"] == 1, "the cancelled request was executed"
    assert batch_sizes(s, "cancel") == {8: 1}


# ---------------------------------------------------------------------------
# Model warmup (§3.9)
# ---------------------------------------------------------------------------

WARMUP = """
model_warmup [ {{ name: "w" batch_size: 1
  inputs {{ key: "{input}" value: {{ data_type: TYPE_INT32 dims: [ 2 ] zero_data: true }} }} }} ]
"""


def test_warmup_runs_before_model_is_ready(repo, server_factory):
    # The only warmup sample takes 700 ms: the server cannot be ready sooner.
    timed_model(repo, "warm", fixed_us=700000, extra=WARMUP.format(input="INPUT0"))
    t0 = time.monotonic()
    s = server_factory(repo)
    ready_after = time.monotonic() - t0
    assert ready_after >= 0.65, f"ready after {ready_after:.3f} s, before the 700 ms warmup finished"
    assert s.get("/v2/models/warm/ready").status == 200
    assert index_entry(s, "warm")["state"] == "READY"


def test_warmup_count_repeats_the_sample(repo, server_factory):
    # count: 3 runs the 250 ms sample three times before the model is ready.
    timed_model(repo, "warm3", fixed_us=250000,
                extra=WARMUP.format(input="INPUT0").replace('batch_size: 1', 'batch_size: 1 count: 3'))
    t0 = time.monotonic()
    s = server_factory(repo)
    ready_after = time.monotonic() - t0
    assert ready_after >= 0.7, f"ready after {ready_after:.3f} s, before three 250 ms warmup runs"
    assert s.get("/v2/models/warm3/ready").status == 200


def test_warmup_with_unknown_input_fails_the_load(repo, server_factory):
    timed_model(repo, "badwarm", fixed_us=1000, extra=WARMUP.format(input="NOPE"))
    identity_model(repo, "good")
    s = server_factory(repo, "--exit-on-error=false", wait_ready=False)
    entry = index_entry(s, "badwarm")
    assert entry["state"] == "UNAVAILABLE", entry
    assert "NOPE" in entry.get("reason", ""), entry
    assert_error(s.get("/v2/models/badwarm/ready"), 400)
    assert_echo(infer(s, "good"))
