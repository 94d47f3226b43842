"""Random gNMI requests against a host in the middle of a run: every one is answered OK,
INVALID_ARGUMENT or NOT_FOUND (never an internal error), the host keeps serving, and the run's
results equal those of the same run without them. The Set values drawn are all of a wrong type or
out of range, so nothing may change."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pygnmi.spec.v080 import gnmi_pb2, gnmi_pb2_grpc

from tests.integration.gnmi_host import DrivenHost
from tests.unit.test_gnmi_paths import INCAST

pytestmark = pytest.mark.integration

US = 1_000_000
ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
NAMES = ["interfaces", "interface", "state", "config", "counters", "in-octets", "high-speed", "qos", "ecn", "pfc",
         "kmin-bytes", "kmax-bytes", "enabled", "pmax", "system", "buffer", "aps", "*", "...", ""]

texts = st.text(max_size=12)
names = st.one_of(st.sampled_from(NAMES), texts)
keys = st.dictionaries(st.one_of(st.just("name"), texts), st.one_of(st.sampled_from(["p0", "o", "i0", "*"]), texts),
                       max_size=2)
elems = st.builds(lambda n, k: gnmi_pb2.PathElem(name=n, key=k), names, keys)
paths = st.one_of(
    st.builds(lambda e, o: gnmi_pb2.Path(elem=e, origin=o), st.lists(elems, max_size=6),
              st.sampled_from(["", "openconfig", "vendor"])),
    st.builds(lambda e: gnmi_pb2.Path(element=e), st.lists(texts, max_size=4)),  # the deprecated string form
)
targets = st.one_of(st.sampled_from(["", "leaf", "rx", "tx", "nope"]), texts)
encodings = st.integers(min_value=0, max_value=8)

# values no writable leaf accepts: strings, negative or huge integers, numbers outside [0, 1], lists
bad_scalars = st.one_of(texts, st.integers(max_value=-1), st.integers(min_value=1 << 41, max_value=1 << 62),
                        st.floats(min_value=1.5, allow_nan=False, allow_infinity=False), st.floats(max_value=-0.5))
bad_json = st.recursive(bad_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(names, inner, min_size=1, max_size=3)),
                        max_leaves=5)
values = st.one_of(
    st.builds(lambda v: gnmi_pb2.TypedValue(json_val=json.dumps(v).encode()), bad_json),
    st.builds(lambda v: gnmi_pb2.TypedValue(json_ietf_val=json.dumps(v).encode()), bad_json),
    st.builds(lambda b: gnmi_pb2.TypedValue(json_val=b), st.binary(max_size=8)),
    st.builds(lambda s: gnmi_pb2.TypedValue(string_val=s), texts),
    st.builds(lambda i: gnmi_pb2.TypedValue(int_val=i), st.integers(min_value=-(1 << 63), max_value=-1)),
    st.builds(lambda i: gnmi_pb2.TypedValue(uint_val=i), st.integers(min_value=1 << 41, max_value=(1 << 64) - 1)),
    st.builds(lambda b: gnmi_pb2.TypedValue(bytes_val=b), st.binary(max_size=8)),
    st.just(gnmi_pb2.TypedValue()),
)
updates = st.lists(st.builds(lambda p, v: gnmi_pb2.Update(path=p, val=v), paths, values), max_size=3)

gets = st.builds(lambda t, p, e, d: ("Get", gnmi_pb2.GetRequest(prefix=gnmi_pb2.Path(target=t), path=p, encoding=e,
                                                                 type=d)),
                 targets, st.lists(paths, max_size=3), encodings, st.integers(min_value=0, max_value=5))
sets = st.builds(lambda t, r, u, d: ("Set", gnmi_pb2.SetRequest(prefix=gnmi_pb2.Path(target=t), replace=r, update=u,
                                                                 delete=d)),
                 targets, updates, updates, st.lists(paths, max_size=1))
subscribes = st.builds(
    lambda t, p, e, m, poll_first: ("Subscribe", [gnmi_pb2.SubscribeRequest(poll=gnmi_pb2.Poll())] if poll_first else [
        gnmi_pb2.SubscribeRequest(subscribe=gnmi_pb2.SubscriptionList(
            prefix=gnmi_pb2.Path(target=t), encoding=e, mode=m,
            subscription=[gnmi_pb2.Subscription(path=x) for x in p])),
        gnmi_pb2.SubscribeRequest(poll=gnmi_pb2.Poll())]),
    targets, st.lists(paths, max_size=2), encodings, st.sampled_from([1, 2, 3, 7]), st.booleans())
requests = st.one_of(gets, sets, subscribes)


def call(stub: Any, method: str, request: Any) -> None:
    if method == "Subscribe":
        list(stub.Subscribe(iter(request), timeout=5))
    else:
        getattr(stub, method)(request, timeout=5)


def test_random_requests_neither_crash_the_host_nor_change_the_run() -> None:
    plain = DrivenHost(INCAST)
    fuzzed = DrivenHost(INCAST)
    try:
        plain.start()
        plain.run_to(1000 * US, 100 * US)
        stub = gnmi_pb2_grpc.gNMIStub(fuzzed.channel)
        answered: dict[str, int] = {}

        @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(requests)
        def one(method_request: tuple[str, Any]) -> None:
            method, request = method_request
            try:
                call(stub, method, request)
                code = "OK"
            except grpc.RpcError as e:
                assert e.code() in ALLOWED, (method, request, e.code(), e.details())
                assert e.details(), "an error must say what is wrong"
                code = e.code().name
            answered[code] = answered.get(code, 0) + 1

        fuzzed.start()
        while fuzzed.end_ps < 1000 * US:
            one()  # between windows, as a client would
            fuzzed.advance(fuzzed.end_ps + 100 * US)
        assert fuzzed.alive() and {"OK", "INVALID_ARGUMENT", "NOT_FOUND"} <= set(answered)
        stub.Get(gnmi_pb2.GetRequest(prefix=gnmi_pb2.Path(target="leaf")), timeout=5)
        assert fuzzed.results() == plain.results()
    finally:
        plain.close()
        fuzzed.close()
