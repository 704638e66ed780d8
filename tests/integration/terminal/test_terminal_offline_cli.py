"""The clinic's side of a dropped link, through the command: a patient looked
up by ID number (read from standard input, never the command line, never
kept) is known to the terminal, so an order for them can be kept offline; an
unknown patient cannot; `yigongti outbox` shows what waits and `yigongti
send` sends it once the link is back."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from fastapi import FastAPI, Header, HTTPException
from labflow import ce_type, payload
from labjourney import one
from pydantic import BaseModel
from typer.testing import CliRunner
from yigongti_kit.auth import issue_token
from yigongti_kit.http import bound_port, serve, shutdown
from yigongti_terminal.cli import app

runner = CliRunner()
NATIONAL_ID = "11010519491231002X"  # the GB 11643 standard's own example number


class _Lookup(BaseModel):
    id_number: str
    visit_id: str


def stand_in_settlement(token: str) -> FastAPI:
    """The lookup (POST /patients/lookup) as the settlement service's branch serves it
    (id_number and visit_id); its key stays here, as it does there."""
    api = FastAPI()

    @api.post("/patients/lookup")
    async def lookup(body: _Lookup, authorization: str = Header("")) -> dict:
        if authorization != f"Bearer {token}":
            raise HTTPException(401, "bad_signature")
        digest = hashlib.sha256(b"stand-in key:" + body.id_number.encode()).hexdigest()
        return {"patient_ref": f"v1:{digest}"}

    return api


async def yigongti(clinic, *args: str, input: str | None = None):  # noqa: A002
    return await asyncio.to_thread(
        runner.invoke, app, ["--home", str(clinic.config.home), *args], input=input,
        env={"COLUMNS": "250"})


ORDER = ("lab", "order", "--test", "K", "--sex", "female", "--age", "76", "--visit", "V-9",
         "--clinician", "doc-17", "--wait", "0")


async def test_offline_a_looked_up_patient_is_queued_and_sent_once_back_online(
        clinic, dev_keys, caplog):
    caplog.set_level(logging.DEBUG)
    token = issue_token(dev_keys.auth_private_pem, user="nurse-3",
                        institution=dev_keys.institution_id, roles=["clinic_terminal"],
                        audience="settlement")
    server, task = await serve(stand_in_settlement(token), "127.0.0.1", 0)
    try:
        (clinic.config.home / "settlement.token").write_text(token)
        clinic.config.services["settlement"] = f"http://127.0.0.1:{bound_port(server)}"
        clinic.config.tokens["settlement"] = clinic.config.home / "settlement.token"
        clinic.config.save()
        found = await yigongti(clinic, "patient", "lookup", "--visit", "V-9", "--stdin",
                               input=NATIONAL_ID + "\n")
    finally:
        await shutdown(server, task)
    assert found.exit_code == 0, found.output
    ref = found.output.split("patient_ref:")[1].split()[0]
    assert clinic.client.queue.knows(ref)

    await clinic.proxy.cut()
    kept = await yigongti(clinic, *ORDER, "--patient", ref, "--order-id", "O-offline-1")
    assert kept.exit_code == 0, kept.output
    assert "kept on this terminal" in kept.output
    unknown = await yigongti(clinic, *ORDER, "--patient", "v1:" + "cd" * 32)
    assert unknown.exit_code == 1
    assert "[unknown_patient_offline]" in " ".join(unknown.output.split())
    waiting = await yigongti(clinic, "outbox")
    assert "1 record(s) waiting" in waiting.output and "O-offline-1" in waiting.output
    assert "lab order" in waiting.output
    still = await yigongti(clinic, "send")
    assert "waiting 1" in still.output

    await clinic.proxy.restore()
    sent = await yigongti(clinic, "send")
    assert "Sent 1; waiting 0" in sent.output, sent.output
    await one(clinic, "order.accepted.v1", order_id="O-offline-1")
    again = await yigongti(clinic, "send")
    assert "Sent 0; waiting 0" in again.output
    answered = await yigongti(clinic, "outbox")  # reads the feed: the order was answered
    assert "Nothing waits" in answered.output and "no answer yet" not in answered.output
    assert [payload(r)["patient_ref"] for r in clinic.events.records
            if ce_type(r).endswith("order.accepted.v1")] == [ref]

    # The ID number is nowhere on the terminal, nor in any log line.
    for path in clinic.config.home.rglob("*"):
        if path.is_file():
            assert NATIONAL_ID.encode() not in path.read_bytes(), path
    assert NATIONAL_ID not in caplog.text
    assert NATIONAL_ID not in found.output
