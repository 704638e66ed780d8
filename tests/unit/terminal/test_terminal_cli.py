"""The command's surface: --help on every command, services not built yet say
so, and the ID number is never taken from the command line."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner
from yigongti_contracts.registry import SERVICE_MODULES
from yigongti_kit.intake_auth import TerminalSigner
from yigongti_terminal.cli import app
from yigongti_terminal.config import TerminalConfig

runner = CliRunner()


def _commands(group, path=()) -> dict[tuple[str, ...], object]:
    found = {path: group}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group
            found |= _commands(command, (*path, name))
        else:
            found[(*path, name)] = command
    return found


TREE = _commands(typer.main.get_command(app))
COMMANDS = list(TREE)


def test_the_command_tree_covers_the_clinic_s_work():
    names = {" ".join(c) for c in COMMANDS}
    assert {"lab order", "lab collect", "lab dispatch", "lab ack", "inbox", "outbox",
            "patient lookup", "diagnosis ecg", "diagnosis study", "diagnosis ack",
            "referral request", "referral depart", "referral arrive", "settle face",
            "settle qr", "settle card"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "yigongti")
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    described = TREE[command].help or TREE[command].short_help
    assert described and described.split()[0] in result.output, f"{command}: no description"


@pytest.fixture
def home(tmp_path):
    signer = TerminalSigner.generate("t-unit-1")
    key = tmp_path / "t.key"
    from cryptography.hazmat.primitives import serialization

    key.write_bytes(signer._key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    TerminalConfig(home=tmp_path, terminal_id="t-unit-1", institution_id="652325-B01",
                   key_file=key, user_id="nurse-3", kafka_bootstrap="127.0.0.1:1",
                   services={"lab": "http://127.0.0.1:1"}, send_timeout_s=1).save()
    return tmp_path


# Every service's contract is published now; what a terminal can still lack is a
# service's address (the `home` fixture knows only the lab's).
WITHOUT_ADDRESS = [("settle", "face", "--visit", "V-1", "--result", __file__),
                   ("settle", "qr", "--visit", "V-1", "--voucher", __file__),
                   ("settle", "card", "--visit", "V-1", "--card-sn", "S1"),
                   ("settle", "query", "OB1"),
                   ("referral", "request", "--patient", "v1:" + "ab" * 32, "--to",
                    "652325-H01", "--reason", "critical_beyond_capability"),
                   ("referral", "decide", "RF-1", "--accept"),
                   ("referral", "depart", "RF-1"), ("referral", "arrive", "RF-1")]


@pytest.mark.parametrize("command", WITHOUT_ADDRESS, ids=lambda c: " ".join(c[:2]))
def test_a_service_without_its_address_says_so_and_queues_nothing(home, command):
    result = runner.invoke(app, ["--home", str(home), *command], input="110101199003077777\n")
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "[service_not_available]" in text or "[not_set_up]" in text
    assert {"settle": "settlement"}.get(command[0], command[0]) in text
    assert "110101199003077777" not in text
    if (home / "outbox.sqlite").exists():
        from yigongti_terminal.queue import Queue

        queue = Queue(home / "outbox.sqlite")
        try:
            assert queue.waiting() == []
        finally:
            queue.close()


def test_diagnosis_without_its_address_is_not_available(home):
    result = runner.invoke(app, ["--home", str(home), "diagnosis", "ack", "F-1"])
    assert result.exit_code == 2
    assert "not available" in result.output


def test_the_id_number_is_never_an_argument(home):
    result = runner.invoke(app, ["--home", str(home), "patient", "lookup", "--visit", "V-1",
                                 "110101199003077777"])
    assert result.exit_code == 2  # a usage error: there is no such argument
    assert "110101199003077777" not in (home / "outbox.sqlite").read_bytes().decode(
        "latin-1") if (home / "outbox.sqlite").exists() else True


def test_lookup_without_the_settlement_service_asks_for_nothing(home):
    result = runner.invoke(app, ["--home", str(home), "patient", "lookup", "--visit", "V-1"],
                           input="110101199003077777\n")
    assert result.exit_code == 2
    assert "not available" in result.output and "110101199003077777" not in result.output


def test_setup_writes_what_status_shows(tmp_path):
    key = tmp_path / "k.pem"
    from cryptography.hazmat.primitives import serialization

    key.write_bytes(TerminalSigner.generate("t-9")._key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    home = tmp_path / "home"
    written = runner.invoke(app, ["--home", str(home), "setup", "--terminal-id", "t-9",
                                  "--institution", "652325-B01", "--key-file", str(key),
                                  "--user", "nurse-3", "--bootstrap", "county:9092",
                                  "--service", "lab=http://127.0.0.1:9", "--token",
                                  f"lab={tmp_path / 'lab.token'}"])
    assert written.exit_code == 0, written.output
    shown = runner.invoke(app, ["--home", str(home), "status"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "http://127.0.0.1:9" in shown.output and "Waiting to be sent: 0" in shown.output
    assert "cannot be reached" in shown.output
    assert "referral" in shown.output and "settlement" in shown.output


def test_an_unset_terminal_says_so(tmp_path):
    result = runner.invoke(app, ["--home", str(tmp_path / "none"), "outbox"])
    assert result.exit_code == 2 and "[not_set_up]" in " ".join(result.output.split())


def test_outbox_shows_what_was_sent_and_never_answered(home):
    from datetime import UTC, datetime, timedelta

    from yigongti_terminal.queue import Queue

    queue = Queue(home / "outbox.sqlite")
    item = queue.capture(service="lab", ce_type="yigongti.lab.order.placed.v1", key="O-7",
                         value=b'{"order_id":"O-7"}', aggregate="O-7")
    queue.mark_sent(item.seq)
    long_ago = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    queue._db.execute("UPDATE outbox SET sent_at = ? WHERE seq = ?", (long_ago, item.seq))
    queue.close()
    shown = runner.invoke(app, ["--home", str(home), "outbox"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "Nothing waits" in text and "1 record(s) sent, no answer yet" in text
    assert "O-7" in text and "lab order" in text and "may have ignored them" in text


@pytest.mark.skipif("referral" not in SERVICE_MODULES, reason="referral contract not published")
def test_referral_commands_build_their_contract_s_records(home):
    """Once the referral contract is merged: each command builds a valid record of it,
    and the terminal knows the event that answers it."""
    from yigongti_terminal import cli
    from yigongti_terminal.client import ACCEPTED_BY, TerminalClient
    from yigongti_terminal.config import load

    config = load(home)
    config.services["referral"] = "http://127.0.0.1:9"
    client = TerminalClient(config)
    try:
        now = cli._now()
        built = [
            cli._referral_event(client, "ReferralRequested", referral_id="RF-1",
                                direction="up", from_institution="652325-B01",
                                to_institution="652325-H01", patient_ref="v1:" + "ab" * 32,
                                reason="critical_beyond_capability", urgency="emergency",
                                requested_by="doc-17", requested_at=now),
            cli._referral_event(client, "ReferralDecision", referral_id="RF-1",
                                decision="accept", decided_by="doc-17", decided_at=now),
            cli._referral_event(client, "PatientDeparted", referral_id="RF-1", departed_at=now),
            cli._referral_event(client, "PatientArrived", referral_id="RF-1", arrived_at=now),
        ]
    finally:
        client.close()
    module = SERVICE_MODULES["referral"]
    for event in built:
        assert type(event) in module.INTAKE and event.CE_TYPE in ACCEPTED_BY
        published = {m.CE_TYPE for m in module.EVENTS}
        assert set(ACCEPTED_BY[event.CE_TYPE][0]) <= published
