"""The workstation's HTML, rendered on the server. Every label comes from the
message table (`m`); every value from the database or a caller goes through
`esc`. Element ids and data attributes are stable: the browser tests find
things by them, never by label text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from functools import cache
from html import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import ecg_limits
from . import sessions
from .messages import has, language, m

SUPERVISOR = "diagnosis_supervisor"  # the role of a centre's supervisor (dev user file)


@cache
def _zone() -> tzinfo:
    try:
        return ZoneInfo(sessions.policy()["display_timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        return timezone(timedelta(hours=8))


def when(value: datetime, pattern: str = "%Y-%m-%d %H:%M") -> str:
    """A time as the readers read it (policy.yaml: display_timezone)."""
    return value.astimezone(_zone()).strftime(pattern)


def esc(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def page(title_key: str, body: str, *, session=None, status_line: str = "") -> str:
    user = ""
    if session is not None:
        user = (f'<span id="who" data-user="{esc(session.principal.user)}">'
                f'{esc(session.principal.user)} · {esc(session.principal.institution)}</span>'
                f'<form method="post" action="/ws/logout" class="inline" id="logout-form">'
                f'{csrf_field(session)}<button type="submit" id="logout">{m("logout")}</button>'
                f'</form>')
        if SUPERVISOR in session.principal.roles:
            user += f'<a href="/ws/supervisor" id="supervisor-link">{m("supervisor.title")}</a>'
    return (
        '<!doctype html><html lang="' + esc(language()) + '"><head><meta charset="utf-8">'
        f'<title>{m(title_key)} · {m("title")}</title>'
        '<link rel="stylesheet" href="/ws/static/ws.css">'
        '<script src="/ws/static/ws.js" defer></script></head><body>'
        f'<header><a href="/ws/worklist" id="home">{m("title")}</a>{user}</header>'
        f'{status_line}<main>{body}</main></body></html>')


def csrf_field(session) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(session.csrf)}">'


def notice(key: str, kind: str = "error", **values) -> str:
    return f'<p class="notice {kind}" id="notice" data-key="{esc(key)}">{esc(m(key, **values))}</p>'


def login(csrf: str, failed_key: str | None = None) -> str:
    body = (
        f'<h1>{m("login.title")}</h1>'
        + (notice(failed_key) if failed_key else "")
        + '<form method="post" action="/ws/login" id="login-form">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        f'<label>{m("login.user")} <input name="user" id="user" autocomplete="username" '
        'required></label>'
        f'<label>{m("login.password")} <input name="password" id="password" type="password" '
        'autocomplete="current-password" required></label>'
        f'<button type="submit" id="login-submit">{m("login.submit")}</button></form>')
    return page("login.title", body)


def message_page(key: str, session=None, **values) -> str:
    return page("title", notice(key, **values) + f'<p><a href="/ws/worklist">{m("back")}</a></p>',
                session=session)


# --- worklist -------------------------------------------------------------------


def age_text(age) -> str:
    if isinstance(age, str):
        age = json.loads(age)
    return m(f"age.{age['unit']}", n=age["value"])


def time_left(due_at: datetime, now: datetime) -> tuple[str, bool]:
    minutes = int((due_at - now).total_seconds() // 60)
    if minutes < 0:
        return m("overdue_by", n=-minutes), True
    return m("minutes_left", n=minutes), False


def action_form(request_id: str, action: str, session, button_id: str) -> str:
    return (f'<form method="post" action="/ws/studies/{esc(request_id)}/{action}" class="inline">'
            f'{csrf_field(session)}<button type="submit" id="{button_id}">'
            f'{m("action." + action)}</button></form>')


def worklist_rows(rows: Iterable[Mapping], now: datetime, session,
                  names: Mapping[str, str]) -> str:
    me = session.principal.user
    out = ['<tbody id="worklist-rows">']
    empty = True
    for r in rows:
        empty = False
        rid = r["request_id"]
        left, overdue = time_left(r["due_at"], now)
        if r["status"] == "claimed":
            status = m("status.claimed_by", user=r["claimed_by"])
        else:
            status = m("status.queued")
        actions = [f'<a href="/ws/studies/{esc(rid)}" id="open-{esc(rid)}">{m("action.open")}</a>']
        if r["status"] == "queued":
            actions.append(action_form(rid, "claim", session, f"claim-{esc(rid)}"))
        elif r["claimed_by"] == me:
            actions.append(action_form(rid, "release", session, f"release-{esc(rid)}"))
        onset = when(r["symptom_onset"], "%m-%d %H:%M") if r["symptom_onset"] else "-"
        out.append(
            f'<tr id="row-{esc(rid)}" data-request-id="{esc(rid)}" '
            f'data-priority="{esc(r["priority"])}" data-status="{esc(r["status"])}" '
            f'data-claimed-by="{esc(r["claimed_by"] or "")}" '
            f'data-overdue="{"1" if overdue else "0"}" '
            f'class="p-{esc(r["priority"]).lower()}{" overdue" if overdue else ""}">'
            f'<td class="priority">{esc(m("priority." + r["priority"]))}</td>'
            f'<td>{esc(r["modality"])}</td>'
            f'<td>{esc(names.get(r["requesting_institution"], r["requesting_institution"]))}</td>'
            f'<td>{esc(m("sex." + r["sex"]))} / {esc(age_text(r["age"]))}</td>'
            f'<td>{esc(", ".join(r["indications"]))}</td>'
            f'<td>{esc(onset)}</td>'
            f'<td class="time-left">{"<strong>" if overdue else ""}{esc(left)}'
            f'{"</strong>" if overdue else ""}</td>'
            f'<td class="status">{esc(status)}</td>'
            f'<td>{" ".join(actions)}</td></tr>')
    if empty:
        out.append(f'<tr id="worklist-empty"><td colspan="9">{m("worklist.empty")}</td></tr>')
    out.append("</tbody>")
    return "".join(out)


def worklist(rows_html: str, session, flash: str = "") -> str:
    cols = ("priority", "modality", "institution", "patient", "indication", "onset",
            "time_left", "status", "action")
    head = "".join(f"<th>{m('col.' + c)}</th>" for c in cols)
    body = (
        f'<h1>{m("worklist.title")} <small id="live" data-state="connecting">'
        f'{m("worklist.live")}</small></h1>{flash}'
        '<form method="post" action="/ws/claim-next" class="inline">'
        f'{csrf_field(session)}<button type="submit" id="claim-next">'
        f'{m("worklist.claim_next")}</button></form>'
        f'<table id="worklist"><thead><tr>{head}</tr></thead>{rows_html}</table>')
    return page("worklist.title", body, session=session)


# --- a study --------------------------------------------------------------------


def _reason(code: str) -> str:
    if has(f"reason.{code}"):
        return m(f"reason.{code}")
    if code.startswith("ecg_"):
        return f"{m('reason.ecg_auto')} ({code[4:]})"
    return m(f"reason.{code}") if has(f"reason.{code}") else code


MEASURES = ("heart_rate_bpm", "rr_cv_percent", "longest_pause_s", "qrs_ms", "qt_ms",
            "qtc_ms", "qtc_bazett_ms", "beats", "detection_lead")


def measurements(data: Mapping | None) -> str:
    if not data:
        return f'<p id="measurements-none">{m("m.none")}</p>'
    rows = []
    withheld = data.get("withheld") or {}
    # The automatic finding: a measurement beyond a critical limit (ecg_critical.yaml).
    beyond = {b.measurement: b for b in ecg_limits.breaches(data)}
    for key in MEASURES:
        value = data.get(key)
        shown = esc(value) if value is not None else f'{m("m.withheld")} ({esc(withheld.get(key, ""))})'
        breach = beyond.get(key)
        mark = (f' <strong class="breach">{m("m.breach")} ({esc(breach.comparator)} '
                f'{esc(breach.limit)} {esc(breach.unit)})</strong>' if breach else "")
        rows.append(f'<tr data-measure="{key}" data-breach="{"1" if breach else "0"}">'
                    f'<th>{m("m." + key)}</th><td>{shown}{mark}</td></tr>')
    return f'<table id="measurements">{"".join(rows)}</table>'


def study(row: Mapping, session, *, svg: str | None, names: Mapping[str, str],
          callback: str | None, revisions: list, finding: Mapping | None,
          previous: list, codes: Mapping[str, Mapping], flash: str = "",
          earlier: tuple | None = None) -> str:
    rid = row["request_id"]
    me = session.principal.user
    reasons = "".join(f'<li data-reason="{esc(c)}">{esc(_reason(c))}</li>'
                      for c in row["priority_reasons"])
    head = (
        f'<h1 id="study-title" data-request-id="{esc(rid)}" data-status="{esc(row["status"])}">'
        f'{m("study.title")} {esc(rid)} · {esc(row["modality"])} · '
        f'<span class="priority p-{esc(row["priority"]).lower()}">'
        f'{esc(m("priority." + row["priority"]))}</span></h1>{flash}'
        '<dl id="study-facts">'
        f'<dt>{m("col.institution")}</dt><dd>{esc(names.get(row["requesting_institution"], row["requesting_institution"]))}</dd>'
        f'<dt>{m("study.callback")}</dt><dd id="callback">{esc(callback or m("study.callback_unknown"))}</dd>'
        f'<dt>{m("study.clinician")}</dt><dd>{esc(row["requesting_clinician"])}</dd>'
        f'<dt>{m("col.patient")}</dt><dd>{esc(m("sex." + row["sex"]))} / {esc(age_text(row["age"]))}</dd>'
        f'<dt>{m("col.indication")}</dt><dd>{esc(", ".join(row["indications"]))}</dd>'
        f'<dt>{m("study.due_at")}</dt><dd>{esc(when(row["due_at"], "%Y-%m-%d %H:%M"))}</dd>'
        f'<dt>{m("col.status")}</dt><dd id="study-status">{esc(m("status." + row["status"]))}'
        f'{" · " + esc(row["claimed_by"]) if row["claimed_by"] else ""}</dd>'
        f'<dt>{m("study.priority_reasons")}</dt><dd><ul id="priority-reasons">{reasons}</ul></dd>'
        '</dl>')
    actions = ""
    if row["status"] == "queued":
        actions = action_form(rid, "claim", session, "claim")
    elif row["status"] == "claimed" and row["claimed_by"] == me:
        actions = action_form(rid, "release", session, "release")
    reading = ""
    if row["modality"] == "ECG":
        trace = (f'<div id="ecg-paper">{svg}</div>' if svg
                 else f'<p>{m("study.no_recording")}</p>')
        reading = (f'<section id="ecg-view"><h2>{m("ecg.trace")}</h2><div class="ecg-row">'
                   f'{trace}<aside><h3>{m("ecg.measurements")}</h3>'
                   f'{measurements(row["measurements"])}</aside></div></section>')
        if earlier is not None:
            reading += (f'<section id="previous-ecg" data-request-id="{esc(earlier[0])}">'
                        f'<h2>{m("study.previous_ecg")} · {esc(when(earlier[1], "%Y-%m-%d %H:%M"))}'
                        f'</h2>{earlier[2]}</section>')
    else:
        study_data = row["study"]
        if isinstance(study_data, str):
            study_data = json.loads(study_data)
        series = (study_data or {}).get("series", [])
        items = "".join(
            f'<figure class="series" data-series="{esc(s.get("series_uid", ""))}">'
            f'<img alt="" src="/ws/studies/{esc(rid)}/series/{esc(s.get("series_uid", ""))}/preview">'
            f'<figcaption>{esc(s.get("modality", ""))} #{esc(s.get("number") or "")} · {esc(s.get("instance_count", ""))}'
            f'</figcaption></figure>' for s in series)
        reading = f'<section id="series"><h2>{m("study.series")}</h2>{items}</section>'
    prev = "".join(f'<li data-request-id="{esc(p["request_id"])}">{esc(p["modality"])} · '
                   f'{esc(when(p["reported_at"], "%Y-%m-%d"))} · {esc(p["performed_by"])}</li>'
                   for p in previous) or f"<li>{m('study.previous_none')}</li>"
    previous_html = f'<section><h2>{m("study.previous")}</h2><ul id="previous">{prev}</ul></section>'
    report = ""
    if row["status"] == "claimed" and row["claimed_by"] == me:
        report = report_form(rid, session, codes)
    if revisions:
        report += signed(revisions, finding, codes)
        report += amend_form(rid, session, codes)
    body = head + f'<p id="actions">{actions}</p>' + reading + previous_html + report
    return page("study.title", body, session=session)


def _conclusion_options(codes: Mapping[str, Mapping]) -> str:
    return "".join(
        f'<option value="{esc(code)}" data-critical="{"1" if entry["critical"] else "0"}">'
        f'{esc(code)} {esc(m("conclusion." + code))}</option>' for code, entry in codes.items())


def _report_fields(codes: Mapping[str, Mapping]) -> str:
    return (
        f'<label>{m("report.findings")}<textarea name="findings" id="findings" required>'
        '</textarea></label>'
        f'<label>{m("report.impression")}<textarea name="impression" id="impression" required>'
        '</textarea></label>'
        f'<label>{m("report.conclusion")}<select name="conclusion" id="conclusion" required>'
        f'<option value="" selected></option>{_conclusion_options(codes)}</select></label>'
        f'<label><input type="checkbox" name="critical" id="critical" value="1"> '
        f'{m("report.critical")}</label>'
        '<input type="hidden" name="confirm_critical" id="confirm-critical" value="">')


def report_form(rid: str, session, codes) -> str:
    return (f'<section id="report"><h2>{m("report.title")}</h2>'
            f'<form method="post" action="/ws/studies/{esc(rid)}/report" id="report-form" '
            f'data-confirm="{esc(m("report.confirm_critical"))}">{csrf_field(session)}'
            f'{_report_fields(codes)}<button type="submit" id="sign">{m("report.sign")}</button>'
            '</form></section>')


def amend_form(rid: str, session, codes) -> str:
    reasons = "".join(f'<option value="{r}">{m("amend." + r)}</option>'
                      for r in ("error_corrected", "finding_added", "comparison_added", "other"))
    return (f'<section id="amend"><h2>{m("report.amend")}</h2>'
            f'<form method="post" action="/ws/studies/{esc(rid)}/amend" id="amend-form" '
            f'data-confirm="{esc(m("report.confirm_critical"))}">{csrf_field(session)}'
            f'{_report_fields(codes)}<label>{m("report.reason")}<select name="reason" id="reason">'
            f'<option value=""></option>{reasons}</select></label>'
            f'<button type="submit" id="amend-submit">{m("report.amend")}</button></form></section>')


def signed(revisions: list, finding: Mapping | None, codes) -> str:
    items = []
    for r in revisions:
        items.append(
            f'<article class="revision" data-revision="{r["revision"]}" '
            f'data-critical="{"1" if r["critical"] else "0"}">'
            f'<h3>{m("report.revision")} {r["revision"]} · {esc(r["reader"])} · '
            f'{esc(when(r["signed_at"], "%Y-%m-%d %H:%M"))}</h3>'
            f'<p>{m("report.findings")}: {esc(r["findings"])}</p>'
            f'<p>{m("report.impression")}: {esc(r["impression"])}</p>'
            f'<p>{m("report.conclusion")}: '
            f'{esc(", ".join(c + " " + m("conclusion." + c) for c in r["conclusions"]))}</p>'
            + (f'<p>{m("report.reason")}: {esc(m("amend." + r["reason"]))}</p>' if r["reason"] else "")
            + "</article>")
    crit = ""
    if finding is not None:
        state = (m("critical.acknowledged") if finding["acknowledged_at"]
                 else m("critical.waiting"))
        crit = (f'<p id="critical-state" data-step="{finding["step"]}" '
                f'data-acknowledged="{"1" if finding["acknowledged_at"] else "0"}">'
                f'{m("critical.title")}: {esc(state)} · {esc(m("critical.step", n=finding["step"]))}</p>')
    return f'<section id="signed"><h2>{m("report.signed")}</h2>{crit}{"".join(items)}</section>'


# --- the supervisor's view --------------------------------------------------------


def supervisor(session, *, overdue: list, findings: list, claims: list, now: datetime,
               names: Mapping[str, str], ladder) -> str:
    def table(rows: list[str], head: list[str], table_id: str) -> str:
        if not rows:
            return f'<p id="{table_id}-none">{m("supervisor.none")}</p>'
        cells = "".join(f"<th>{h}</th>" for h in head)
        return f'<table id="{table_id}"><thead><tr>{cells}</tr></thead><tbody>{"".join(rows)}</tbody></table>'

    late = []
    for r in overdue:
        left, _ = time_left(r["due_at"], now)
        late.append(
            f'<tr id="overdue-{esc(r["request_id"])}" data-request-id="{esc(r["request_id"])}">'
            f'<td>{esc(m("priority." + r["priority"]))}</td><td>{esc(r["modality"])}</td>'
            f'<td><a href="/ws/studies/{esc(r["request_id"])}">{esc(r["request_id"])}</a></td>'
            f'<td>{esc(names.get(r["requesting_institution"], r["requesting_institution"]))}</td>'
            f'<td>{esc(left)}</td><td>{esc(r["claimed_by"] or m("status.queued"))}</td></tr>')
    crit = []
    for f in findings:
        who = ladder(f["step"]) if f["step"] else "none"
        crit.append(
            f'<tr id="critical-{esc(f["request_id"])}" data-request-id="{esc(f["request_id"])}" '
            f'data-step="{f["step"]}" data-escalated-to="{esc(who)}">'
            f'<td><a href="/ws/studies/{esc(f["request_id"])}">{esc(f["request_id"])}</a></td>'
            f'<td>{esc(f["conclusion"])} {esc(m("conclusion." + f["conclusion"]))}</td>'
            f'<td>{esc(when(f["raised_at"], "%H:%M"))}</td>'
            f'<td>{esc(when(f["acknowledge_by"], "%H:%M"))}</td>'
            f'<td>{esc(m("critical.step", n=f["step"]))} · {esc(m("ladder." + who))}</td></tr>')
    held = [f'<tr data-reader="{esc(c["claimed_by"])}"><td>{esc(c["claimed_by"])}</td>'
            f'<td>{c["n"]}</td><td>{esc(", ".join(c["ids"]))}</td></tr>' for c in claims]
    body = (
        f'<h1>{m("supervisor.title")}</h1>'
        f'<h2>{m("supervisor.overdue")}</h2>'
        + table(late, [m("col.priority"), m("col.modality"), m("study.title"),
                       m("col.institution"), m("col.time_left"), m("col.status")], "overdue")
        + f'<h2>{m("supervisor.critical")}</h2>'
        + table(crit, [m("study.title"), m("report.conclusion"), m("supervisor.raised_at"),
                       m("supervisor.ack_by"), m("supervisor.escalated_to")], "critical")
        + f'<h2>{m("supervisor.claims")}</h2>'
        + table(held, [m("supervisor.reader"), m("supervisor.count"), m("study.title")],
                "claims"))
    return page("supervisor.title", body, session=session)
