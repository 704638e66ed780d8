"""The `yigongti` command: a township or village clinic's terminal.

Every command has --help. Refusals are told in plain words with their code
(messages.py). Records go through the store-and-forward queue: when the
county cannot be reached they wait, and `yigongti outbox` shows them.
Exit codes: 0 done (or kept to send later), 1 refused, 2 not available or
not set up, 3 sent but no answer yet.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from yigongti_contracts.base import StrictModel
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.lab.codes import Priority, TubeType
from yigongti_contracts.lab.parts import OrderedTest
from yigongti_contracts.lab.v1 import (
    CriticalValueAck,
    LabOrderPlaced,
    SpecimenCollected,
    SpecimenDispatched,
)

from . import messages, readback, services
from .client import SubmitResult, TerminalClient, UnknownPatientOffline
from .config import ConfigError, load
from .http import HttpRefused
from .inbox import describe, merged, open_criticals
from .sender import LinkDown

console = Console()
err = Console(stderr=True)

app = typer.Typer(help="The clinic terminal of the county medical community (医共体): lab "
                       "orders and tubes, ECGs and studies, acknowledgements, the inbox.",
                  no_args_is_help=True, add_completion=False)
lab_app = typer.Typer(help="Lab orders, tubes and critical values.", no_args_is_help=True)
patient_app = typer.Typer(help="Find a patient's reference (patient_ref).",
                          no_args_is_help=True)
diagnosis_app = typer.Typer(help="ECGs and imaging studies for the county's reading centre, "
                                 "and critical findings.", no_args_is_help=True)
referral_app = typer.Typer(help="Referrals to and from the county hospital (once its "
                                "contract is published).", no_args_is_help=True)
settle_app = typer.Typer(help="Insurance settlement: face, QR or card, with the three "
                              "payers' breakdown (once its contract is published).",
                         no_args_is_help=True)
app.add_typer(lab_app, name="lab")
app.add_typer(patient_app, name="patient")
app.add_typer(diagnosis_app, name="diagnosis")
app.add_typer(referral_app, name="referral")
app.add_typer(settle_app, name="settle")

OK, REFUSED, UNAVAILABLE, NO_ANSWER = 0, 1, 2, 3

Home = Annotated[Path | None, typer.Option(
    "--home", envvar="YIGONGTI_HOME", help="The terminal's directory (terminal.yaml, the "
    "queue). Default ~/.yigongti.")]
Wait = Annotated[float, typer.Option(help="Seconds to wait for the county's answer "
                                          "(0: do not wait; it shows in the inbox).")]


class _State:
    home: Path | None = None


@app.callback()
def _main(home: Home = None) -> None:
    global console, err  # noqa: PLW0603 - made per run: the width (COLUMNS) of this run
    _State.home = home
    console, err = Console(), Console(stderr=True)
    _telemetry()


def _telemetry() -> None:
    """Trace ids for what the terminal sends (so a journey is one trace from the
    clinic on); spans are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set, and
    appended as OTLP JSON to OTEL_TRACES_FILE when that is (the demo's file)."""
    import os
    from types import SimpleNamespace

    from yigongti_kit.telemetry import setup_telemetry

    setup_telemetry("yigongti-terminal", SimpleNamespace(
        otel_exporter_otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        otel_traces_file=os.environ.get("OTEL_TRACES_FILE")))


def _client() -> TerminalClient:
    try:
        return TerminalClient(load(_State.home))
    except ConfigError as exc:
        err.print(f"[red]{escape(messages.local('not_set_up'))}[/red] ({escape(str(exc))})")
        raise typer.Exit(UNAVAILABLE) from None


def _fail(text: str, code: int) -> None:
    err.print(f"[red]{escape(text)}[/red]")
    raise typer.Exit(code)


def _run(work: Callable[[TerminalClient], Any]) -> Any:
    """Run `work(client)` (a coroutine), saying every refusal in plain words."""
    client = _client()
    try:
        return asyncio.run(work(client))
    except services.ServiceNotAvailable as exc:
        _fail(f"{messages.local('service_not_available')} ({exc.service}: {exc.why})",
              UNAVAILABLE)
    except ConfigError as exc:
        _fail(f"{messages.local('not_set_up')} ({exc})", UNAVAILABLE)
    except UnknownPatientOffline:
        _fail(messages.local("unknown_patient_offline"), REFUSED)
    except HttpRefused as exc:
        _fail(messages.http_refusal(exc.status, exc.detail), REFUSED)
    except LinkDown:
        _fail(messages.local("link_down").split(" The record")[0] + " [link_down]", UNAVAILABLE)
    finally:
        client.close()


async def _submit(client: TerminalClient, service: str, event: StrictModel, what: str,
                  wait: float) -> int:
    result: SubmitResult = await client.submit(service, event)
    if not result.sent:
        console.print(f"[yellow]{escape(what)}: kept on this terminal.[/yellow] "
                      f"{escape(messages.local('link_down'))} Waiting: {result.waiting}.")
        return OK
    console.print(f"{what}: sent (record {result.ce_id}).")
    if wait <= 0:
        return OK
    try:
        answer = await client.answer(service, result, timeout=wait)
    except (HttpRefused, LinkDown, ConfigError):
        answer = None
    if answer is None:
        console.print("No answer yet; it will show in `yigongti inbox`.")
        return NO_ANSWER
    if answer.accepted:
        console.print(f"[green]Accepted[/green] ({answer.type.split('.')[-2]}).")
        return OK
    err.print(f"[red]Refused: {escape(messages.intake_reason(answer.reason or '', service))}"
              "[/red]")
    for f in answer.fields:
        err.print(escape(f"  - {f.get('field')}: {f.get('code')}"))
    return REFUSED


def _now() -> datetime:
    return datetime.now(UTC)


def _when(text: str | None) -> datetime:
    if not text:
        return _now()
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise typer.BadParameter("give a time with its zone, e.g. 2026-01-15T08:30:00+08:00")
    return value


# --- the queue ------------------------------------------------------------------------


# A sent record unanswered this long was probably ignored by the county (never
# answered: e.g. the terminal's clock is off, or its key is not registered).
UNANSWERED_WARN_MIN = 10


@app.command()
def outbox() -> None:
    """Show what waits on this terminal to be sent to the county, oldest first, and
    what was sent but not answered yet."""
    async def work(client: TerminalClient) -> int:
        for service in {item.service for item, _ in client.queue.unanswered()}:
            try:
                await client.read_feed(service)
            except (LinkDown, HttpRefused, ConfigError):
                pass  # shown from what the terminal has
        unanswered = client.reconcile()
        waiting = client.queue.waiting()
        if not waiting:
            console.print("Nothing waits: everything was sent.")
        else:
            table = Table(title=f"{len(waiting)} record(s) waiting to be sent")
            for column in ("#", "service", "what", "for", "captured", "tries", "last problem"):
                table.add_column(column)
            for q in waiting:
                table.add_row(str(q.seq), q.service, describe(q.ce_type), q.aggregate,
                              q.captured_at[:19].replace("T", " "), str(q.attempts),
                              q.last_error or "")
            console.print(table)
        if unanswered:
            now = _now()
            table = Table(title=f"{len(unanswered)} record(s) sent, no answer yet")
            for column in ("#", "service", "what", "for", "sent", "minutes"):
                table.add_column(column)
            late = 0
            for q, sent_at in unanswered:
                minutes = int((now - datetime.fromisoformat(sent_at)).total_seconds() // 60)
                late += minutes >= UNANSWERED_WARN_MIN
                table.add_row(str(q.seq), q.service, describe(q.ce_type), q.aggregate,
                              sent_at[:19].replace("T", " "), str(minutes))
            console.print(table)
            if late:
                console.print(f"[yellow]{late} record(s) got no answer for "
                              f"{UNANSWERED_WARN_MIN} minutes or more: the county may have "
                              "ignored them (check the clock with `yigongti status`). "
                              "Ask the IT helpdesk of the county hospital.[/yellow]")
        return OK
    raise typer.Exit(_run(work))


@app.command()
def send() -> None:
    """Send what waits now (it is also sent with the next record)."""
    async def work(client: TerminalClient) -> int:
        report = await client.flush()
        console.print(f"Sent {len(report.sent)}; waiting {report.waiting}.")
        if report.link_error:
            console.print(f"[yellow]{escape(messages.local('link_down'))}[/yellow]")
        return OK
    raise typer.Exit(_run(work))


# --- patients ----------------------------------------------------------------------------


@patient_app.command("lookup")
def patient_lookup(
    visit: Annotated[str, typer.Option(help="The visit the look-up is for.")],
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the ID number from standard "
                                                        "input instead of the prompt.")] = False,
) -> None:
    """Find a patient's reference from the ID number (asked without showing it, or read
    from standard input; never given on the command line, never kept)."""
    config = _client().config
    if not config.services.get("settlement"):
        _fail(f"{messages.local('service_not_available')} (settlement: the patient lookup is "
              "planned, not served yet)", UNAVAILABLE)
    if stdin or not sys.stdin.isatty():
        national_id = sys.stdin.readline().strip()
    else:
        national_id = typer.prompt("ID number", hide_input=True).strip()
    if not national_id:
        _fail("No ID number was given.", REFUSED)

    secret = [national_id]
    del national_id  # held only in `secret` until the call, then dropped

    async def work(client: TerminalClient) -> str:
        return await client.lookup_patient(secret.pop(), visit)
    ref = _run(work)
    console.print(f"patient_ref: {ref}")


# --- lab -----------------------------------------------------------------------------------


@lab_app.command("order")
def lab_order(
    patient: Annotated[str, typer.Option(help="The patient's patient_ref (from `yigongti "
                                              "patient lookup`).")],
    test: Annotated[list[str], typer.Option(help="A test code from the lab catalogue; "
                                                 "repeat for more.")],
    sex: Annotated[Sex, typer.Option(help="The patient's sex.")],
    age: Annotated[int, typer.Option(help="Age in years (in days under one year, with "
                                          "--age-in-days).")],
    visit: Annotated[str, typer.Option(help="The visit id.")],
    clinician: Annotated[str, typer.Option(help="The ordering clinician's id.")],
    age_in_days: Annotated[bool, typer.Option(help="The age is in days.")] = False,
    priority: Annotated[Priority, typer.Option(help="How urgent.")] = Priority.routine,
    indication: Annotated[list[str] | None, typer.Option(help="ICD-10 code of why; "
                                                              "repeatable.")] = None,
    order_id: Annotated[str | None, typer.Option(help="The order number (default: a new "
                                                      "one).")] = None,
    wait: Wait = 10.0,
) -> None:
    """Place a lab order for a patient."""
    async def work(client: TerminalClient) -> int:
        event = LabOrderPlaced(
            order_id=order_id or f"O-{uuid.uuid4().hex[:12]}", visit_id=visit,
            patient_ref=patient, sex=sex,
            age=Age(value=age, unit=AgeUnit.days if age_in_days else AgeUnit.years),
            ordering_institution=client.config.institution_id, ordering_clinician=clinician,
            priority=priority, tests=tuple(OrderedTest(code=c) for c in test),
            indications=tuple(indication or ()), ordered_at=_now())
        return await _submit(client, "lab", event, f"Order {event.order_id}", wait)
    raise typer.Exit(_run(work))


@lab_app.command("collect")
def lab_collect(
    order_id: Annotated[str, typer.Argument(help="The order number.")],
    barcode: Annotated[str, typer.Option(help="The tube's barcode label.")],
    test: Annotated[list[str], typer.Option(help="A test of the order in this tube; "
                                                 "repeatable.")],
    tube: Annotated[TubeType, typer.Option(help="The tube type.")],
    collected_at: Annotated[str | None, typer.Option(help="When (default now), with its "
                                                          "zone.")] = None,
    centrifuged_at: Annotated[str | None, typer.Option(help="When centrifuged, if it "
                                                            "was.")] = None,
    recollection_of: Annotated[str | None, typer.Option(help="The rejected tube this one "
                                                             "replaces.")] = None,
    wait: Wait = 10.0,
) -> None:
    """Record a tube collected for an order."""
    async def work(client: TerminalClient) -> int:
        event = SpecimenCollected(
            barcode=barcode, order_id=order_id, tests=tuple(test), tube=tube,
            collected_at=_when(collected_at),
            centrifuged_at=_when(centrifuged_at) if centrifuged_at else None,
            collector_id=client.config.user_id, recollection_of=recollection_of)
        return await _submit(client, "lab", event, f"Tube {barcode}", wait)
    raise typer.Exit(_run(work))


@lab_app.command("dispatch")
def lab_dispatch(
    barcode: Annotated[list[str], typer.Option(help="A tube in the box; repeatable.")],
    courier: Annotated[str, typer.Option(help="The courier's id.")],
    logger: Annotated[str, typer.Option(help="The temperature logger's id.")],
    destination: Annotated[str | None, typer.Option(help="The lab centre.")] = None,
    shipment_id: Annotated[str | None, typer.Option(help="The shipment number (default: a "
                                                         "new one).")] = None,
    wait: Wait = 10.0,
) -> None:
    """Send tubes to the lab centre (one box, one courier)."""
    async def work(client: TerminalClient) -> int:
        event = SpecimenDispatched(
            shipment_id=shipment_id or f"S-{uuid.uuid4().hex[:12]}", barcodes=tuple(barcode),
            courier_id=courier, temperature_logger_id=logger, dispatched_at=_now(),
            destination=destination)
        return await _submit(client, "lab", event, f"Shipment {event.shipment_id}", wait)
    raise typer.Exit(_run(work))


def _read_back(prompt_unit: bool) -> tuple[str, str]:
    if not sys.stdin.isatty():
        value = sys.stdin.readline().strip()
        unit = sys.stdin.readline().strip() if prompt_unit else ""
        return value, unit
    value = typer.prompt("Read back: the value")
    unit = typer.prompt("Read back: the unit") if prompt_unit else ""
    return value, unit


@lab_app.command("ack")
def lab_ack(
    critical_id: Annotated[str, typer.Argument(help="The critical value's number (see "
                                                    "`yigongti inbox`).")],
    wait: Wait = 10.0,
) -> None:
    """Acknowledge a critical value: type back its value and unit. Confirmed only when
    both match what the lab sent; otherwise nothing is sent."""
    async def work(client: TerminalClient) -> int:
        await client.read_feed("lab")
        raised = next((i["data"] for i in client.known_items("lab")
                       if i["type"].endswith("critical_value.raised.v1")
                       and i["data"].get("critical_id") == critical_id), None)
        if raised is None:
            _fail(messages.http_refusal(404, "no such critical value"), REFUSED)
        console.print(f"Critical value {critical_id}: test {raised['test_code']} of order "
                      f"{raised['order_id']}.")
        typed_value, typed_unit = _read_back(prompt_unit=raised.get("coded_value") is None)
        if not readback.matches(sent_value=raised.get("value"), sent_unit=raised.get("unit"),
                                sent_comparator=raised.get("comparator"),
                                sent_code=raised.get("coded_value"),
                                typed_value=typed_value, typed_unit=typed_unit):
            _fail(messages.local("read_back_mismatch"), REFUSED)
        event = CriticalValueAck(order_id=raised["order_id"], critical_id=critical_id,
                                 received_by=client.config.user_id, read_back_confirmed=True,
                                 acknowledged_at=_now())
        return await _submit(client, "lab", event, f"Acknowledgement of {critical_id}", wait)
    raise typer.Exit(_run(work))


@lab_app.command("report")
def lab_report(order_id: Annotated[str, typer.Argument(help="The order number.")]) -> None:
    """Show an order's verified results."""
    async def work(client: TerminalClient) -> int:
        async with client.http("lab") as http:
            report = await http.get(f"/orders/{order_id}/report")
        table = Table(title=f"Order {order_id}: verified results")
        for column in ("test", "result", "unit", "reference", "flag", "verified by"):
            table.add_column(column)
        for o in report.get("observations", []):
            if o.get("status") != "verified":
                continue  # superseded by an amendment
            result = (o.get("comparator") or "") + str(
                o["value"] if o.get("value") is not None else o.get("coded_value") or "")
            low, high = o.get("reference_low"), o.get("reference_high")
            reference = f"{low or ''}-{high or ''}" if low or high else ""
            flag = (o.get("flag") or "") + (" CRITICAL" if o.get("critical") else "")
            table.add_row(str(o.get("test_code") or o.get("code")), result,
                          str(o.get("unit") or ""), reference, flag.strip(),
                          str(o.get("verified_by") or ""))
        console.print(table)
        return OK
    raise typer.Exit(_run(work))


# --- diagnosis (draft contract: yigongti_contracts.diagnosis.v1) ------------------------

# The ECG upload (claim check): the file's bytes as they are, typed by its suffix.
MEDIA_TYPES = {".dcm": "application/dicom", ".dicom": "application/dicom", ".csv": "text/csv"}


def _request_fields(client: TerminalClient, *, patient: str, sex: Sex, age: int,
                    age_in_days: bool, visit: str, clinician: str,
                    indication: list[str]) -> dict[str, Any]:
    return dict(request_id=f"R-{uuid.uuid4().hex[:12]}", visit_id=visit, patient_ref=patient,
                sex=sex, age=Age(value=age, unit=AgeUnit.days if age_in_days else
                                 AgeUnit.years),
                indications=tuple(indication), requesting_institution=
                client.config.institution_id, requesting_clinician=clinician,
                requested_at=_now())


Patient = Annotated[str, typer.Option(help="The patient's patient_ref.")]
SexOpt = Annotated[Sex, typer.Option(help="The patient's sex.")]
AgeOpt = Annotated[int, typer.Option(help="Age in years (days with --age-in-days).")]
Days = Annotated[bool, typer.Option(help="The age is in days.")]
Visit = Annotated[str, typer.Option(help="The visit id.")]
Clinician = Annotated[str, typer.Option(help="The requesting clinician's id.")]
Indication = Annotated[list[str], typer.Option(help="ICD-10 code of why (e.g. I21.9); "
                                                    "repeatable.")]


def _diagnosis_ready(client: TerminalClient) -> None:
    services.contract("diagnosis")
    if not client.config.services.get("diagnosis"):
        raise services.ServiceNotAvailable("diagnosis", "this terminal has no address for it")


@diagnosis_app.command("ecg")
def diagnosis_ecg(
    file: Annotated[Path, typer.Argument(help="The ECG: a DICOM 12-lead waveform (.dcm) or "
                                              "a CSV of leads (.csv).", exists=True,
                                         dir_okay=False, readable=True)],
    patient: Patient, sex: SexOpt, age: AgeOpt, visit: Visit, clinician: Clinician,
    indication: Indication,
    age_in_days: Days = False,
    symptom_onset: Annotated[str | None, typer.Option(help="When the symptoms began, with "
                                                           "its zone.")] = None,
    first_contact: Annotated[str | None, typer.Option(help="First medical contact, with its "
                                                           "zone.")] = None,
    priority: Annotated[Priority | None, typer.Option(help="Your own priority (the county "
                                                           "never lowers it).")] = None,
    wait: Wait = 10.0,
) -> None:
    """Send an ECG to the county's reading centre: the file is uploaded, then read."""
    media_type = MEDIA_TYPES.get(file.suffix.lower())
    if media_type is None:
        _fail("The ECG must be a DICOM file (.dcm) or a CSV file (.csv).", REFUSED)

    async def work(client: TerminalClient) -> int:
        from yigongti_contracts.diagnosis.codes import Modality
        from yigongti_contracts.diagnosis.v1 import DiagnosisRequested

        _diagnosis_ready(client)
        async with client.http("diagnosis") as http:
            uploaded = await http.post("/recordings", content=file.read_bytes(),
                                       headers={"Content-Type": media_type})
        console.print(f"ECG uploaded ({uploaded.get('duration_s')} s at "
                      f"{uploaded.get('sample_rate_hz')} Hz).")
        event = DiagnosisRequested(
            **_request_fields(client, patient=patient, sex=sex, age=age,
                              age_in_days=age_in_days, visit=visit, clinician=clinician,
                              indication=indication),
            modality=Modality.ECG, recording_ref=uploaded["recording_ref"],
            symptom_onset=_when(symptom_onset) if symptom_onset else None,
            first_medical_contact_at=_when(first_contact) if first_contact else None,
            clinician_priority=priority)
        return await _submit(client, "diagnosis", event, f"ECG request {event.request_id}",
                             wait)
    raise typer.Exit(_run(work))


@diagnosis_app.command("study")
def diagnosis_study(
    uid: Annotated[str, typer.Option(help="The study's DICOM Study Instance UID on the "
                                          "county PACS.")],
    accession: Annotated[str, typer.Option(help="The study's accession number.")],
    modality: Annotated[str, typer.Option(help="DX, CT, US or MR.")],
    patient: Patient, sex: SexOpt, age: AgeOpt, visit: Visit, clinician: Clinician,
    indication: Indication,
    age_in_days: Days = False,
    wait: Wait = 10.0,
) -> None:
    """Ask the county to read an imaging study already sent to its PACS."""
    async def work(client: TerminalClient) -> int:
        from yigongti_contracts.diagnosis.codes import Modality
        from yigongti_contracts.diagnosis.v1 import DiagnosisRequested

        _diagnosis_ready(client)
        kind = Modality(modality.upper())
        if kind is Modality.ECG:
            _fail("An ECG is sent with `yigongti diagnosis ecg`.", REFUSED)
        event = DiagnosisRequested(
            **_request_fields(client, patient=patient, sex=sex, age=age,
                              age_in_days=age_in_days, visit=visit, clinician=clinician,
                              indication=indication),
            modality=kind, study_instance_uid=uid, accession_number=accession)
        return await _submit(client, "diagnosis", event,
                             f"Study request {event.request_id}", wait)
    raise typer.Exit(_run(work))


@diagnosis_app.command("ack")
def diagnosis_ack(
    finding_id: Annotated[str, typer.Argument(help="The critical finding's number (see "
                                                   "`yigongti inbox`).")],
    wait: Wait = 10.0,
) -> None:
    """Acknowledge a critical finding: type back its conclusion code. Confirmed only when
    it matches what the county sent; otherwise nothing is sent."""
    async def work(client: TerminalClient) -> int:
        from yigongti_contracts.diagnosis.codes import AckChannel as DxAckChannel
        from yigongti_contracts.diagnosis.v1 import CriticalFindingAck

        _diagnosis_ready(client)
        await client.read_feed("diagnosis")
        raised = next((i["data"] for i in client.known_items("diagnosis")
                       if i["type"].endswith("critical_finding.raised.v1")
                       and i["data"].get("finding_id") == finding_id), None)
        if raised is None:
            _fail(messages.http_refusal(404, "no such critical finding"), REFUSED)
        console.print(f"Critical finding {finding_id} of request {raised['request_id']}.")
        typed, _ = _read_back(prompt_unit=False)
        if not readback.matches(sent_value=None, sent_unit=None,
                                sent_code=raised.get("conclusion"), typed_value=typed,
                                typed_unit=""):
            _fail(messages.local("read_back_mismatch"), REFUSED)
        event = CriticalFindingAck(request_id=raised["request_id"], finding_id=finding_id,
                                   acknowledged_by=client.config.user_id,
                                   channel=DxAckChannel.terminal, read_back_confirmed=True,
                                   acknowledged_at=_now())
        return await _submit(client, "diagnosis", event, f"Acknowledgement of {finding_id}",
                             wait)
    raise typer.Exit(_run(work))


# --- referral and settlement: their services are not built yet ---------------------------


def _referral() -> Any:
    """The referral contract module, or the clear refusal while it is not published."""
    return services.contract("referral")


def _referral_ready(client: TerminalClient) -> Any:
    module = _referral()
    if not client.config.services.get("referral"):
        raise services.ServiceNotAvailable("referral", "this terminal has no address for it")
    return module


def _referral_event(client: TerminalClient, name: str, **fields: Any) -> StrictModel:
    module = _referral_ready(client)
    try:
        return getattr(module, name).model_validate(fields)
    except ValueError as exc:  # pydantic's ValidationError: the fields named, no values
        wrong = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        _fail(f"Some details are not in the right form: {wrong}.", REFUSED)
        raise  # not reached


@referral_app.command("request")
def referral_request(
    patient: Patient,
    to: Annotated[str, typer.Option(help="The institution the patient is referred to.")],
    reason: Annotated[str, typer.Option(help="Why (a reason code of the direction, e.g. "
                                             "critical_beyond_capability).")],
    urgency: Annotated[str, typer.Option(help="emergency, urgent or routine.")] = "urgent",
    clinician: Annotated[str | None, typer.Option(help="Who requests (default: the "
                                                       "terminal's user).")] = None,
    capability: Annotated[str | None, typer.Option(help="The care the receiver must "
                                                        "offer.")] = None,
    referral_id: Annotated[str | None, typer.Option(help="The referral number (default: a "
                                                         "new one).")] = None,
    wait: Wait = 10.0,
) -> None:
    """Request an upward referral to a higher-level hospital (a referral back down is
    made at the county, with its care plan)."""
    async def work(client: TerminalClient) -> int:
        fields = dict(referral_id=referral_id or f"RF-{uuid.uuid4().hex[:12]}",
                      direction="up", from_institution=client.config.institution_id,
                      to_institution=to, patient_ref=patient, reason=reason, urgency=urgency,
                      requested_by=clinician or client.config.user_id, requested_at=_now())
        if capability:
            fields["required_capability"] = capability
        event = _referral_event(client, "ReferralRequested", **fields)
        return await _submit(client, "referral", event, f"Referral {fields['referral_id']}",
                             wait)
    raise typer.Exit(_run(work))


@referral_app.command("decide")
def referral_decide(
    referral_id: Annotated[str, typer.Argument(help="The referral number.")],
    accept: Annotated[bool, typer.Option("--accept/--decline", help="Take the patient, or "
                                                                    "not.")],
    reason: Annotated[str | None, typer.Option(help="Why declined (a decline reason "
                                                    "code).")] = None,
    wait: Wait = 10.0,
) -> None:
    """Accept or decline a referral sent to this clinic (a patient coming back down)."""
    async def work(client: TerminalClient) -> int:
        fields: dict[str, Any] = dict(referral_id=referral_id,
                                      decision="accept" if accept else "decline",
                                      decided_by=client.config.user_id, decided_at=_now())
        if reason:
            fields["reason"] = reason
        event = _referral_event(client, "ReferralDecision", **fields)
        return await _submit(client, "referral", event, f"Decision on {referral_id}", wait)
    raise typer.Exit(_run(work))


@referral_app.command("depart")
def referral_depart(
    referral_id: Annotated[str, typer.Argument(help="The referral number.")],
    at: Annotated[str | None, typer.Option(help="When the patient left (default now), with "
                                                "its zone.")] = None,
    wait: Wait = 10.0,
) -> None:
    """Record that the referred patient left this clinic."""
    async def work(client: TerminalClient) -> int:
        event = _referral_event(client, "PatientDeparted", referral_id=referral_id,
                                departed_at=_when(at))
        return await _submit(client, "referral", event, f"Departure on {referral_id}", wait)
    raise typer.Exit(_run(work))


@referral_app.command("arrive")
def referral_arrive(
    referral_id: Annotated[str, typer.Argument(help="The referral number.")],
    at: Annotated[str | None, typer.Option(help="When the patient arrived (default now), "
                                                "with its zone.")] = None,
    wait: Wait = 10.0,
) -> None:
    """Record that a referred patient arrived at this clinic."""
    async def work(client: TerminalClient) -> int:
        event = _referral_event(client, "PatientArrived", referral_id=referral_id,
                                arrived_at=_when(at))
        return await _submit(client, "referral", event, f"Arrival on {referral_id}", wait)
    raise typer.Exit(_run(work))


# The three payers' breakdown (三重保障), in the order the money is counted.
BREAKDOWN = (("total", "Total (总费用)"), ("policy_range", "Within the policy (政策范围内)"),
             ("outside_range", "Outside the policy (政策范围外)"),
             ("deductible", "Deductible (起付线)"), ("basic", "Basic insurance (基本医保)"),
             ("critical_illness", "Critical illness insurance (大病保险)"),
             ("large_amount_subsidy", "Large-amount subsidy (大额补助)"),
             ("assistance", "Medical assistance (医疗救助)"),
             ("out_of_pocket", "The patient pays (个人自付)"))

SettingOpt = Annotated[str, typer.Option(help="outpatient or inpatient.")]
BillOpt = Annotated[Path | None, typer.Option(help="An itemised bill: a JSON list of lines "
                                                   "(item_code, category, quantity, "
                                                   "unit_price, amount, served_at).",
                                              exists=True, dir_okay=False)]
PostedOpt = Annotated[bool, typer.Option(help="Also settle the charges the lab and "
                                              "diagnosis posted to the visit.")]
OutBizNoOpt = Annotated[str | None, typer.Option("--out-biz-no", help="The counter's "
                                                 "number for this payment (default: new).")]


def _print_settlement(answer: dict) -> int:
    if answer.get("status") == "rejected":
        _fail("Not settled: " + messages.intake_reason(answer.get("reason", ""),
                                                        "settlement"), REFUSED)
    table = Table(title=f"Settlement {answer.get('settlement_id', '')} "
                        f"({answer.get('status', '')})")
    table.add_column("")
    table.add_column("yuan", justify="right")
    for key, label in BREAKDOWN:
        if key in answer:
            table.add_row(label, str(answer[key]))
    console.print(table)
    explanation = answer.get("explanation")
    if explanation:
        console.print(escape(explanation if isinstance(explanation, str)
                             else "\n".join(map(str, explanation))))
    return OK


def _settle(credential_type: str, credential: dict, visit: str, setting: str,
            bill: Path | None, posted_charges: bool, out_biz_no: str | None) -> None:
    import json

    lines = json.loads(bill.read_text()) if bill else []

    async def work(client: TerminalClient) -> int:
        settled = await client.settle(credential_type=credential_type, credential=credential,
                                      visit_id=visit, setting=setting, lines=lines,
                                      posted_charges=posted_charges, out_biz_no=out_biz_no)
        console.print(f"Counter number (outBizNo): {settled.out_biz_no}")
        return _print_settlement(settled.answer)
    raise typer.Exit(_run(work))


def _settlement_ready() -> None:
    client = _client()
    try:
        services.contract("settlement")
        client.config.url("settlement")
    except services.ServiceNotAvailable as exc:
        _fail(f"{messages.local('service_not_available')} ({exc.service}: {exc.why})",
              UNAVAILABLE)
    except ConfigError as exc:
        _fail(f"{messages.local('not_set_up')} ({exc})", UNAVAILABLE)
    finally:
        client.close()


@settle_app.command("face")
def settle_face(
    visit: Visit,
    result: Annotated[Path, typer.Option(help="The signed face result the certified face "
                                              "device returned (JSON: payload, signature).",
                                         exists=True, dir_okay=False)],
    setting: SettingOpt = "outpatient", bill: BillOpt = None, posted_charges: PostedOpt = True,
    out_biz_no: OutBizNoOpt = None,
) -> None:
    """Settle by face scan (the national face platform's signed result), and print the
    three payers' breakdown."""
    import json

    _settlement_ready()
    _settle("face", json.loads(result.read_text()), visit, setting, bill, posted_charges,
            out_biz_no)


@settle_app.command("qr")
def settle_qr(
    visit: Visit,
    voucher: Annotated[Path, typer.Option(help="The scanned insurance QR voucher (医保电子凭证) "
                                               "(JSON: payload, signature).",
                                          exists=True, dir_okay=False)],
    setting: SettingOpt = "outpatient", bill: BillOpt = None, posted_charges: PostedOpt = True,
    out_biz_no: OutBizNoOpt = None,
) -> None:
    """Settle with the patient's insurance QR voucher, and print the breakdown."""
    import json

    _settlement_ready()
    _settle("qr_voucher", json.loads(voucher.read_text()), visit, setting, bill,
            posted_charges, out_biz_no)


@settle_app.command("card")
def settle_card(
    visit: Visit,
    card_sn: Annotated[str, typer.Option(help="The social security card's serial number.")],
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the card holder's ID number "
                                                        "from standard input.")] = False,
    setting: SettingOpt = "outpatient", bill: BillOpt = None, posted_charges: PostedOpt = True,
    out_biz_no: OutBizNoOpt = None,
) -> None:
    """Settle with the social security card (the ID number is asked without showing it,
    or read from standard input; never kept), and print the breakdown."""
    _settlement_ready()
    if stdin or not sys.stdin.isatty():
        national_id = sys.stdin.readline().strip()
    else:
        national_id = typer.prompt("ID number on the card", hide_input=True).strip()
    if not national_id:
        _fail("No ID number was given.", REFUSED)
    _settle("card", {"id_number": national_id, "card_sn": card_sn}, visit, setting, bill,
            posted_charges, out_biz_no)


@settle_app.command("query")
def settle_query(out_biz_no: Annotated[str, typer.Argument(help="The counter's number "
                                                                "(outBizNo).")]) -> None:
    """Show a settlement by its counter number (after an unclear answer: never pay
    twice, ask)."""
    _settlement_ready()

    async def work(client: TerminalClient) -> int:
        return _print_settlement(await client.settlement(out_biz_no))
    raise typer.Exit(_run(work))


# --- the inbox ---------------------------------------------------------------------------


@app.command()
def inbox(
    wait: Annotated[float, typer.Option(help="Seconds to wait for something new.")] = 0,
    all_items: Annotated[bool, typer.Option("--all", help="Everything, not only the last "
                                                          "50.")] = False,
) -> None:
    """Show the clinic's inbox, merged from the services' feeds: results, reports,
    critical items waiting for acknowledgement with their time left, refusals."""
    async def work(client: TerminalClient) -> int:
        readable = [s for s in services.ALL
                    if services.has_contract(s) and client.config.services.get(s)]
        missing = [s for s in services.ALL if s not in readable]
        for service in readable:
            try:
                await client.read_feed(service, wait=wait)
            except LinkDown:
                console.print(f"[yellow]{service}: the county cannot be reached; showing what "
                              "this terminal has.[/yellow]")
        await client.flush()
        items = merged(client.known_items())
        now = _now()
        criticals = open_criticals(items, now)
        if criticals:
            table = Table(title="Critical items waiting for acknowledgement",
                          title_style="bold red")
            for column in ("number", "service", "for", "what", "time left"):
                table.add_column(column)
            for c in criticals:
                table.add_row(c.number, c.service, c.aggregate, escape(c.what), c.time_left)
            console.print(table)
        table = Table(title="Inbox")
        for column in ("time", "service", "for", "what", "event"):
            table.add_column(column)
        for item in items if all_items else items[-50:]:
            table.add_row(item["time"][:19].replace("T", " "), item["service"],
                          item["aggregate"] or "", escape(item["what"]), item["type"])
        console.print(table)
        if missing:
            console.print(f"Not yet available here: {', '.join(missing)}.")
        return OK
    raise typer.Exit(_run(work))


@app.command()
def setup(
    terminal_id: Annotated[str, typer.Option(help="The terminal id, as registered with the "
                                                  "county.")],
    institution: Annotated[str, typer.Option(help="The clinic's institution id.")],
    key_file: Annotated[Path, typer.Option(help="The terminal's Ed25519 private key (PEM).",
                                           exists=True, dir_okay=False)],
    user: Annotated[str, typer.Option(help="Who works at this terminal (staff id).")],
    bootstrap: Annotated[str, typer.Option(help="The county's Kafka bootstrap servers.")],
    broker_kind: Annotated[str, typer.Option(help="kafka, or embedded (the test "
                                                  "broker).")] = "kafka",
    topic_prefix: Annotated[str, typer.Option(help="A deployment's topic prefix.")] = "",
    service: Annotated[list[str] | None, typer.Option(
        help="A service's address as name=URL, e.g. lab=https://lab.county; "
             "repeatable.")] = None,
    token: Annotated[list[str] | None, typer.Option(
        help="A service's bearer token file as name=PATH; repeatable.")] = None,
) -> None:
    """Write this terminal's settings (terminal.yaml in its directory)."""
    from .config import TerminalConfig, default_home

    def pairs(items: list[str] | None) -> dict[str, str]:
        out = {}
        for item in items or ():
            name, sep, value = item.partition("=")
            if not sep or not name or not value:
                raise typer.BadParameter(f"expected name=value, got {item!r}")
            out[name] = value
        return out

    home = _State.home or default_home()
    config = TerminalConfig(
        home=home, terminal_id=terminal_id, institution_id=institution,
        key_file=key_file.resolve(), user_id=user, kafka_bootstrap=bootstrap,
        kafka_broker_kind=broker_kind, topic_prefix=topic_prefix, services=pairs(service),
        tokens={k: Path(v).resolve() for k, v in pairs(token).items()})
    console.print(f"Written: {config.save()}")


# Beyond this, the county ignores what the terminal signs (INTAKE_MAX_SKEW_S is 300 s).
CLOCK_WARN_S = 120


@app.command()
def status() -> None:
    """Show this terminal's settings, which services it can reach, whether its clock
    agrees with the county's, and what waits."""
    async def work(client: TerminalClient) -> int:
        c = client.config
        table = Table(title=f"Terminal {c.terminal_id} of {c.institution_id}")
        for column in ("service", "address", "state", "clock"):
            table.add_column(column)
        for service in services.ALL:
            clock = ""
            if not services.has_contract(service):
                address, state = "", "not available yet (no published contract)"
            elif not c.services.get(service):
                address, state = "", "no address set"
            else:
                address = c.services[service]
                try:
                    async with client.http(service) as http:
                        offset = await http.clock_offset_s()
                    state = "reachable"
                    if offset is not None:
                        clock = "ok" if abs(offset) <= CLOCK_WARN_S else (
                            f"OFF by {offset:+.0f} s: set the clock, or the county will "
                            "ignore what this terminal sends")
                except (LinkDown, ConfigError) as exc:
                    state = f"cannot be reached ({exc})"
            table.add_row(service, address, state, clock)
        console.print(table)
        console.print(f"Waiting to be sent: {len(client.queue.waiting())}")
        return OK
    raise typer.Exit(_run(work))


@app.command()
def version() -> None:
    """Print the terminal's version."""
    console.print("yigongti terminal 0.1.0")


# --- load ------------------------------------------------------------------------------


@app.command("load")
def load_command(
    rate: Annotated[float, typer.Option(help="Records per second, all clinics together "
                                             "(open loop: sent on time, answered or not).")],
    clinics: Annotated[int, typer.Option(help="How many clinics (terminals, each its own "
                                              "key and patients).")] = 5,
    seconds: Annotated[float, typer.Option(help="How long to send.")] = 10.0,
    bad: Annotated[int, typer.Option(help="Deliberately bad orders among them (refused "
                                          "unknown_test): the refusal path.")] = 0,
    drain: Annotated[float, typer.Option(help="Seconds to wait for the last answers after "
                                              "sending.")] = 30.0,
    to: Annotated[str, typer.Option(help="The services sent to, comma-separated: lab "
                                         "(orders, tubes, dispatches), referral (one patient "
                                         "in four referred up).")] = "lab",
    keys: Annotated[Path | None, typer.Option(
        help="Where the clinics' keys and their registry fragment (terminals.yaml) are "
             "kept. Default: load-clinics/ in the terminal's directory.")] = None,
    register_database: Annotated[str | None, typer.Option(
        envvar="YIGONGTI_LOAD_DATABASE_URL",
        help="A development stack's PostgreSQL URL: add the clinics to each service's "
             "terminal registry there. Otherwise add terminals.yaml to each service's "
             "TERMINALS_FILE.")] = None,
    schema: Annotated[list[str] | None, typer.Option(
        help="A service's schema in that database as service=schema (default: the "
             "service's name, as the stack has it); repeatable.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures to "
                                                                  "this file.")] = None,
) -> None:
    """Drive many clinics' lab orders, collections and dispatches (and referrals) at a
    chosen rate against a running county (this terminal's broker), with live counts
    sent / answered / refused; prints the achieved rate and p50/p99 from send to answer.
    Exit 0 when every record was answered or refused, 3 when some were not."""
    import json as jsonlib

    from . import load as loadgen

    try:
        config = load(_State.home)
    except ConfigError as exc:
        _fail(f"{messages.local('not_set_up')} ({exc})", UNAVAILABLE)
    if clinics < 1 or rate <= 0 or seconds <= 0:
        raise typer.BadParameter("--clinics, --rate and --seconds must be above 0")
    driven = tuple(s.strip() for s in to.split(",") if s.strip())
    if not driven or set(driven) - set(loadgen.DRIVEN):
        raise typer.BadParameter(f"--to takes {', '.join(loadgen.DRIVEN)}")
    schemas = {s: s for s in driven}
    for item in schema or ():
        name, sep, value = item.partition("=")
        if not sep or name not in schemas or not value:
            raise typer.BadParameter(f"--schema expects service=schema of {to}, got {item!r}")
        schemas[name] = value
    where = keys or config.home / "load-clinics"
    kept = loadgen.load_clinics(where)
    if len(kept) < clinics:
        kept = loadgen.make_clinics(clinics)
        fragment = loadgen.save_clinics(where, kept)
        console.print(f"{clinics} new clinic terminals; their registry entries: {fragment}")
    chosen = kept[:clinics]

    async def work() -> dict:
        if register_database:
            for name in driven:
                await loadgen.register(register_database, schemas[name], chosen)
        return await loadgen.drive(loadgen.LoadTarget.from_config(config), chosen, rate=rate,
                                   seconds=seconds, bad=bad, drain_s=drain, console=console,
                                   services=driven)

    try:
        figures = asyncio.run(work())
    except loadgen.LinkDown as exc:
        _fail(messages.local("link_down").split(" The record")[0] + f" [link_down] ({exc})",
              UNAVAILABLE)
    table = Table(title=f"{figures['clinics']} clinics at {rate:g} records/s for {seconds:g} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name in ("planned", "sent", "answered", "refused", "lost", "achieved_per_s",
                 "p50_ms", "p99_ms", "max_ms"):
        table.add_row(name.replace("_", " "), str(figures[name]))
    for reason, count in figures["refused_by_reason"].items():
        table.add_row(f"  refused {reason}", str(count))
    for reason, count in figures["send_failed"].items():
        table.add_row(f"  not sent ({reason})", str(count))
    for name, counts in figures["by_service"].items():
        table.add_row(f"{name}: sent / answered / refused",
                      f"{counts['sent']} / {counts['answered']} / {counts['refused']}")
    console.print(table)
    if figures["lost"]:
        console.print(f"[yellow]{figures['lost']} record(s) had no answer: is every clinic "
                      "in the services' registries (terminals.yaml above)?[/yellow]")
    if json_out:
        json_out.write_text(jsonlib.dumps(figures, indent=2) + "\n")
    raise typer.Exit(OK if not figures["lost"] and not figures["send_failed"] else NO_ANSWER)


def main() -> None:
    app()
