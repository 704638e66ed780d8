"""Out-of-scope callers cannot tell existing orders, tubes and critical values
from missing ones (issue 8 item 9): every route that takes an order id, a
barcode or a critical value's id answers an id outside the caller's scope as
it answers an id that does not exist, with the same status (404), body and
headers, after the same database work (the same SQL, statement by statement)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
from labjourney import (
    GOOD,
    LAB_CENTRE,
    OTHER_CENTRE,
    OTHER_CLINIC,
    confirm,
    http,
    obs,
    one,
    ordered_tube,
    receive,
    report_results,
)

# Headers that differ between any two answers, whatever they say.
PER_ANSWER = {"date", "traceparent", "x-request-id"}


class CountingPool:
    """app.state.pool's stand-in: every statement of a request on its connections is logged."""

    def __init__(self, pool):
        self.pool = pool
        self.statements: list[str] = []

    @asynccontextmanager
    async def _acquire(self):
        async with self.pool.acquire() as conn:
            def log(record) -> None:
                self.statements.append(record.query)

            conn.add_query_logger(log)
            try:
                yield conn
            finally:
                conn.remove_query_logger(log)

    def acquire(self):
        return self._acquire()

    def __getattr__(self, name):
        return getattr(self.pool, name)


@pytest.fixture
async def world(lab, dev_keys):
    """An order of the demo clinic whose tube has a confirmed critical K."""
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "6.9"))
    await confirm(lab, dev_keys, t.barcode)
    critical = await one(lab, "critical_value.raised.v1", barcode=t.barcode)
    return o, t, critical


# (method, path with {order}, {barcode} or {critical}, body)
ROUTES = [
    ("GET", "/orders/{order}", None),
    ("GET", "/orders/{order}/report", None),
    ("GET", "/orders/{order}/fhir", None),
    ("POST", "/specimens/{barcode}/receipt", {"inspection": GOOD}),
    ("POST", "/specimens/{barcode}/confirm", None),
    ("POST", "/orders/{order}/verify", None),
    ("POST", "/orders/{order}/amend",
     {"observation_id": "{barcode}.K.1", "value": "4.0", "reason": "transcription_error"}),
    ("POST", "/critical-values/{critical}/call-backs",
     {"reached": "doc-17", "outcome": "confirmed_read_back"}),
]

# Callers holding the role a route asks for, of an institution outside the
# order's scope: another clinic of the same centre, another county's lab
# centre, and lab staff of the ordering clinic (not of its lab centre).
OUTSIDERS = {
    "another clinic's clinician": (OTHER_CLINIC, ("clinician",)),
    "another centre's staff": (OTHER_CENTRE, ("lab_technologist", "lab_physician")),
    "the clinic's own lab staff": ("652325-B01", ("lab_technologist", "lab_physician")),
}


def _fill(value, ids: dict[str, str]):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


async def test_an_out_of_scope_id_is_answered_as_a_missing_one(lab, dev_keys, world):
    o, t, critical = world
    existing = {"order": o.order_id, "barcode": t.barcode, "critical": critical["critical_id"]}
    missing = {"order": "O-nosuchorder0", "barcode": "B99999999999",
               "critical": "CV-B99999999999.K.1"}
    counting = CountingPool(lab.runtime.app.state.pool)
    lab.runtime.app.state.pool = counting
    try:
        for who, (institution, roles) in OUTSIDERS.items():
            async with http(lab, dev_keys, institution, roles, "u-9") as client:
                for method, path, body in ROUTES:
                    if method == "POST" and "clinician" in roles:
                        continue  # refused for its role (403) before any id is looked at
                    answers = []
                    for ids in (existing, missing):
                        counting.statements.clear()
                        response = await client.request(method, _fill(path, ids),
                                                        json=_fill(body, ids))
                        headers = {k: v for k, v in response.headers.items()
                                   if k not in PER_ANSWER}
                        answers.append((response.status_code, response.text, headers,
                                        list(counting.statements)))
                    case = f"{who}: {method} {path}"
                    there, absent = answers
                    assert there[:3] == absent[:3], case
                    assert there[3] == absent[3], (case, "different database work")
                    assert there[0] == 404, (case, there[:2])
                    assert o.patient_ref not in there[1], case
    finally:
        lab.runtime.app.state.pool = counting.pool


async def test_the_lab_centre_is_told_what_does_not_exist(lab, dev_keys, world):
    """In scope, a missing id is the same 404; an existing one is served."""
    o, t, critical = world
    async with http(lab, dev_keys, LAB_CENTRE, ("lab_technologist", "lab_physician"),
                    "u-9") as staff:
        assert (await staff.get(f"/orders/{o.order_id}")).status_code == 200
        for method, path, body in ROUTES:
            ids = {"order": "O-nosuchorder0", "barcode": "B99999999999",
                   "critical": "CV-B99999999999.K.1"}
            response = await staff.request(method, _fill(path, ids), json=_fill(body, ids))
            assert response.status_code == 404, (method, path, response.text)
