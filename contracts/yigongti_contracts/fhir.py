"""What every service's HL7 FHIR R4 (4.0.1) mapping shares (DESIGN §4): the
identifier systems of the platform's own codes, the code systems it borrows,
and the small builders every mapping needs.

Resources are plain dicts; decimals stay `Decimal` and `dumps` writes them
as they were reported (the precision of a FHIR decimal is significant:
https://hl7.org/fhir/R4/datatypes.html#decimal), so `6.10` is not `6.1`.
References between them are logical (by business identifier,
`Reference.identifier`): an event names the order, specimen or patient by our
identifiers, never by a FHIR server's ids. Inside a Bundle, `bundle` gives
every entry a `fullUrl` and every reference to an entry its `reference`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

Resource = dict[str, Any]

# Identifier and code systems of the platform (naming our own codes).
BASE = "https://yigongti.org/fhir"
PATIENT_REF = f"{BASE}/sid/patient-ref"  # pseudonymous HMAC (DESIGN §4), never the ID number
INSTITUTION = f"{BASE}/sid/institution"  # refdata institution id ("652301-B02")
STAFF = f"{BASE}/sid/staff"  # a clinician's or technologist's staff id
VISIT = f"{BASE}/sid/visit"

# Code systems from outside.
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service section
V2_0487 = "http://terminology.hl7.org/CodeSystem/v2-0487"  # specimen type
V2_0493 = "http://terminology.hl7.org/CodeSystem/v2-0493"  # specimen condition
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V3_PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
COMMUNICATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"

CURRENCY = "CNY"


def sid(kind: str) -> str:
    """The identifier system of one of a service's own ids ("lab-order")."""
    return f"{BASE}/sid/{kind}"


def code_system(name: str) -> str:
    """The code system of one of the platform's code lists ("tube-type")."""
    return f"{BASE}/CodeSystem/{name}"


def extension_url(name: str) -> str:
    return f"{BASE}/StructureDefinition/{name}"


def identifier(system: str, value: str) -> dict[str, str]:
    return {"system": system, "value": value}


def ref(resource_type: str, system: str, value: str) -> dict[str, Any]:
    """A logical reference: the resource of that type with that identifier."""
    return {"type": resource_type, "identifier": identifier(system, value)}


def patient(patient_ref: str) -> dict[str, Any]:
    return ref("Patient", PATIENT_REF, patient_ref)


def organization(institution_id: str) -> dict[str, Any]:
    return ref("Organization", INSTITUTION, institution_id)


def practitioner(staff_id: str) -> dict[str, Any]:
    return ref("Practitioner", STAFF, staff_id)


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(*codings: dict[str, str]) -> dict[str, Any]:
    return {"coding": list(codings)}


def instant(at: datetime) -> str:
    """FHIR dateTime/instant: UTC with its offset, to the millisecond."""
    return at.isoformat(timespec="milliseconds")


def number(value: Decimal) -> Decimal:
    """A FHIR decimal: the value as reported, trailing zeros kept (`dumps`
    writes it as a JSON number with the same digits)."""
    if not value.is_finite():
        raise ValueError("a FHIR decimal is finite")
    return value


def quantity(value: Decimal, unit: str | None, comparator: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": number(value)}
    if comparator:
        out["comparator"] = comparator
    if unit:
        out.update(unit=unit, system=UCUM, code=unit)
    return out


def money(amount: Decimal) -> dict[str, Any]:
    return {"value": number(amount), "currency": CURRENCY}


# Names the urn:uuid of a resource in a Bundle (uuid5 of its type and first
# identifier), so the same resource has the same fullUrl in every read.
_FULL_URL_NAMESPACE = uuid.UUID("0f6c1c1e-7a0b-5f3e-9a43-4f1d2b8e6c7a")


def full_url(resource_type: str, ident: dict[str, str]) -> str:
    name = "|".join((resource_type, ident["system"], ident["value"]))
    return f"urn:uuid:{uuid.uuid5(_FULL_URL_NAMESPACE, name)}"


def bundle(resources: list[Resource]) -> Resource:
    """A collection Bundle. Each entry has a `fullUrl`; a reference (by
    identifier) to a resource of the Bundle gets that resource's fullUrl as its
    `reference`, so it resolves inside the Bundle (every entry of a collection
    needs a fullUrl: https://hl7.org/fhir/R4/bundle.html#references). References to resources outside it
    (Patient, Organization…) stay logical: a urn:uuid there would resolve nowhere."""
    urls: dict[tuple[str, str, str], str] = {}
    entries = []
    for resource in resources:
        idents = resource.get("identifier") or []
        if isinstance(idents, dict):  # Bundle.identifier is a single Identifier
            idents = [idents]
        url = full_url(resource["resourceType"], idents[0]) if idents \
            else f"urn:uuid:{uuid.uuid4()}"
        for ident in idents:
            urls.setdefault((resource["resourceType"], ident["system"], ident["value"]), url)
        entries.append({"fullUrl": url, "resource": resource})
    for entry in entries:
        for reference in _references(entry["resource"]):
            ident = reference["identifier"]
            url = urls.get((reference["type"], ident.get("system"), ident.get("value")))
            if url is not None:
                reference["reference"] = url
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _references(node: Any) -> Iterator[dict[str, Any]]:
    """The logical references (type and identifier) anywhere in `node`."""
    if isinstance(node, dict):
        if isinstance(node.get("type"), str) and isinstance(node.get("identifier"), dict):
            yield node
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def dumps(value: Any) -> str:
    """Compact JSON of a resource, a `Decimal` written with its own digits
    ("6.10", "1E+2"): the json module can only write it through float, which
    drops the trailing zeros FHIR counts as precision."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("a FHIR decimal is finite")
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{dumps(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)
