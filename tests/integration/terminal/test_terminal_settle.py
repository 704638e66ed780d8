"""Settlement at the counter, before the settlement service is merged: a stand-in
of its terminal API as the settlementsvc branch serves it (POST /identity/verify
answering a single-use token, POST /settlements answering the three payers'
breakdown; refusals as {"status": "refused", "reason"} or {"detail"}). The
settle commands print the breakdown, explain refusals in plain words, and never
keep the card holder's ID number."""

from __future__ import annotations

import asyncio
import types

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typer.testing import CliRunner
from yigongti_kit.auth import issue_token
from yigongti_kit.http import bound_port, serve, shutdown
from yigongti_terminal import services
from yigongti_terminal.cli import app

runner = CliRunner()
ID_NUMBER = "11010519491231002X"
REF = "v1:" + "12" * 32
BREAKDOWN = {"total": "1000.00", "policy_range": "900.00", "outside_range": "100.00",
             "deductible": "100.00", "basic": "560.00", "critical_illness": "0.00",
             "large_amount_subsidy": "0.00", "assistance": "120.00",
             "out_of_pocket": "320.00"}


def stand_in(seen: list[dict]) -> FastAPI:
    api = FastAPI()

    @api.post("/identity/verify")
    async def verify(request: Request):
        body = await request.json()
        seen.append(body)
        if body["credential"].get("card_sn") == "BAD":
            return JSONResponse({"status": "refused", "reason": "face_mismatch",
                                 "identity_id": "I-1"}, status_code=403)
        return {"status": "verified", "identity_id": "I-1", "patient_ref": REF,
                "settlement_token": "st_" + "x" * 20, "token_expires_at": "2030-01-01T00:00Z"}

    @api.post("/settlements")
    async def settle(request: Request):
        body = await request.json()
        seen.append(body)
        if body["visit_id"] == "V-dead":
            return {"status": "rejected", "settlement_id": "S-2", "reason": "deceased"}
        return {"status": "completed", "settlement_id": "S-1", "patient_ref": REF,
                **BREAKDOWN, "explanation": "基本医保支付560.00元。"}

    return api


@pytest.fixture
def settlement_contract(monkeypatch):
    """Its contract stands in the registry as it will once merged."""
    monkeypatch.setitem(services.SERVICE_MODULES, "settlement", types.ModuleType("settlement"))


async def yigongti(clinic, *args: str, input: str | None = None):  # noqa: A002
    return await asyncio.to_thread(runner.invoke, app, ["--home", str(clinic.config.home),
                                                        *args], input=input,
                                   env={"COLUMNS": "250"})


async def test_card_settlement_prints_the_breakdown_and_refusals_in_words(
        clinic, dev_keys, settlement_contract):
    seen: list[dict] = []
    server, task = await serve(stand_in(seen), "127.0.0.1", 0)
    try:
        token = clinic.config.home / "settlement.token"
        token.write_text(issue_token(dev_keys.auth_private_pem, user=dev_keys.terminal_id,
                                     institution=dev_keys.institution_id,
                                     roles=["clinic_terminal"], audience="settlement"))
        clinic.config.services["settlement"] = f"http://127.0.0.1:{bound_port(server)}"
        clinic.config.tokens["settlement"] = token
        clinic.config.save()
        paid = await yigongti(clinic, "settle", "card", "--visit", "V-1", "--card-sn", "S123",
                              "--stdin", input=ID_NUMBER + "\n")
        refused = await yigongti(clinic, "settle", "card", "--visit", "V-1", "--card-sn",
                                 "BAD", input=ID_NUMBER + "\n")
        dead = await yigongti(clinic, "settle", "card", "--visit", "V-dead", "--card-sn",
                              "S123", input=ID_NUMBER + "\n")
    finally:
        await shutdown(server, task)
    assert paid.exit_code == 0, paid.output
    text = " ".join(paid.output.split())
    assert "The patient pays (个人自付) │ 320.00" in text
    assert "Medical assistance (医疗救助) │ 120.00" in text and "基本医保支付560.00元" in text
    assert seen[0]["credential"] == {"id_number": ID_NUMBER, "card_sn": "S123"}
    assert seen[1]["settlement_token"].startswith("st_") and seen[1]["posted_charges"]
    assert seen[0]["out_biz_no"] == seen[1]["out_biz_no"]
    assert clinic.client.queue.knows(REF)  # known now, for records kept offline

    assert refused.exit_code == 1
    assert "[403 face_mismatch]" in " ".join(refused.output.split())
    assert dead.exit_code == 1
    assert "Not settled" in dead.output and "[deceased]" in " ".join(dead.output.split())
    for path in clinic.config.home.rglob("*"):
        if path.is_file():
            assert ID_NUMBER.encode() not in path.read_bytes(), path
    assert ID_NUMBER not in paid.output + refused.output + dead.output
