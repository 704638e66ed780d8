"""What every service's HL7 FHIR R4 (4.0.1) mapping shares (DESIGN §4): the
identifier systems of the platform's own codes, the code systems it borrows,
and the small builders every mapping needs.

Resources are plain JSON-ready dicts. References between them are logical
(by business identifier, `Reference.identifier`): an event names the order,
specimen or patient by our identifiers, never by a FHIR server's ids.
"""

from __future__ import annotations

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


def number(value: Decimal) -> int | float:
    """A JSON number for a FHIR decimal. Our values carry at most 6 decimal
    places (Quantity), well inside a double's exact range; trailing zeros of
    the reported precision are not kept."""
    return int(value) if value == value.to_integral_value() else float(value)


def quantity(value: Decimal, unit: str | None, comparator: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": number(value)}
    if comparator:
        out["comparator"] = comparator
    if unit:
        out.update(unit=unit, system=UCUM, code=unit)
    return out


def money(amount: Decimal) -> dict[str, Any]:
    return {"value": number(amount), "currency": CURRENCY}


def bundle(resources: list[Resource]) -> Resource:
    """A collection Bundle of resources that name each other by identifier."""
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in resources]}
