"""The clinic's institution-scoped feed: its own orders' events and intake
rejections, in order, by cursor; another clinic sees nothing of them."""

from __future__ import annotations

import httpx
from labflow import collected, order, rejection_for
from yigongti_kit.auth import issue_token


def client(lab, dev_keys, institution: str, roles=("clinician",)) -> httpx.AsyncClient:
    token = issue_token(dev_keys.auth_private_pem, user="u-1", institution=institution,
                        roles=list(roles), audience="lab")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=lab.runtime.app),
                             base_url="http://lab", headers={"Authorization": f"Bearer {token}"})


async def test_feed_carries_own_events_by_cursor_and_nothing_to_another_clinic(lab, dev_keys):
    o = order(dev_keys.institution_id, tests=("K",))
    await lab.terminal.publish(o)
    await lab.terminal.publish(collected(o, tests=("K",)))
    bad = await lab.terminal.publish(collected(o, tests=("GLU",)))  # not ordered: refused
    await lab.events.wait_for(rejection_for(bad))

    async with client(lab, dev_keys, dev_keys.institution_id) as own:
        first = (await own.get("/feed", params={"limit": 2})).json()
        rest = (await own.get("/feed", params={"after": first["next"]})).json()
        empty = (await own.get("/feed", params={"after": rest["next"], "wait": 0.3})).json()
    types = [i["type"].split(".")[-2] for i in first["items"] + rest["items"]]
    assert types == ["accepted", "collection_recorded", "rejected"]
    assert all(i["order_id"] == o.order_id for i in first["items"] + rest["items"])
    assert empty == {"items": [], "next": rest["next"]}

    async with client(lab, dev_keys, "652325-B02") as other:
        assert (await other.get("/feed")).json()["items"] == []
    async with client(lab, dev_keys, dev_keys.institution_id, roles=("auditor",)) as wrong:
        assert (await wrong.get("/feed")).status_code == 403
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=lab.runtime.app),
                                 base_url="http://lab") as anonymous:
        assert (await anonymous.get("/feed")).status_code == 401
