"""The workstation's labels: every one in the message table, none elsewhere;
passwords as scrypt hashes; values escaped in the pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yigongti_diagnosis.workstation as workstation
from yigongti_diagnosis.workstation import pages, users
from yigongti_diagnosis.workstation.messages import m, table
from yigongti_diagnosis.workstation.sessions import Session
from yigongti_kit.auth import Principal

HERE = Path(workstation.__file__).parent
# CJK ideographs and punctuation, full-width forms, kana (any Chinese text).
CHINESE = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")


def test_no_chinese_text_outside_the_message_table():
    checked = []
    for path in sorted(HERE.rglob("*")):
        if path.is_dir() or path.suffix not in {".py", ".js", ".css", ".html", ".yaml"}:
            continue
        if path.name == "messages.yaml":
            continue
        checked.append(path.name)
        found = CHINESE.findall(path.read_text("utf-8"))
        assert not found, f"{path.relative_to(HERE)} holds Chinese text: {''.join(found[:20])}"
    assert {"pages.py", "routes.py", "ws.js"} <= set(checked)


def test_every_label_the_code_names_is_in_the_table():
    keys = set()
    for path in HERE.rglob("*.py"):
        keys.update(k for k in re.findall(r'\bm\("([a-z_.]+)"', path.read_text("utf-8"))
                    if not k.endswith("."))  # a prefix completed at run time
    assert keys, "no labels found"
    assert keys <= set(table()), sorted(keys - set(table()))
    assert all("zh" in entry for entry in table().values())


def test_every_conclusion_code_has_a_label():
    from yigongti_diagnosis import conclusions

    for modality in ("ECG", "CT"):
        for code in conclusions.codes_for(modality):
            assert m(f"conclusion.{code}") != f"conclusion.{code}", code


def test_scrypt_hash_round_trip():
    stored = users.hash_password("dev-secret")
    assert stored.startswith("scrypt$16384$8$1$")
    assert users.verify_password("dev-secret", stored)
    assert not users.verify_password("dev-secret2", stored)
    assert not users.verify_password("x", "plain-text")
    assert users.hash_password("a") != users.hash_password("a")  # salted


def test_dev_user_file_matches_the_token_shape():
    path = Path(__file__).resolve().parents[3] / "deploy" / "dev" / "workstation_users.yaml"
    loaded = users.load(path)
    assert loaded["STAFF-2001"].institution == "652325-E01"
    assert "diagnostician" in loaded["STAFF-2001"].roles
    assert users.authenticate(loaded, "STAFF-2001", "dev-STAFF-2001") is not None
    assert users.authenticate(loaded, "STAFF-2001", "wrong") is None
    assert users.authenticate(loaded, "NOBODY", "dev-NOBODY") is None


def test_rows_escape_values_and_mark_overdue():
    now = datetime(2026, 1, 1, 8, tzinfo=UTC)
    session = Session(Principal("STAFF-1", "652325-E01", ("diagnostician",)), "tok")
    row = {"request_id": "DX-1", "modality": "ECG", "priority": "stat", "due_at": now - timedelta(minutes=3),
           "status": "queued", "claimed_by": None, "requesting_institution": "<b>x</b>",
           "sex": "male", "age": {"value": 80, "unit": "years"}, "indications": ["I63.9"],
           "symptom_onset": None}
    html = pages.worklist_rows([row], now, session, {})
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert 'data-overdue="1"' in html and m("overdue_by", n=3) in html


def test_the_dev_user_file_never_reaches_the_manifests():
    k8s = Path(__file__).resolve().parents[3] / "k8s"
    for path in k8s.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".json", ".env", ".txt"}:
            text = path.read_text("utf-8", "replace")
            assert "workstation_users" not in text and "WORKSTATION_USERS_FILE" not in text, path
