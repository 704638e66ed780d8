"""The checked-in OpenAPI document matches the lab's routes, and documents them."""

from yigongti_lab import openapi


def test_checked_in_openapi_is_current():
    assert openapi.PATH.read_text() == openapi.render(openapi.document()), \
        "run: python -m yigongti_lab.openapi"


def test_every_lab_route_has_a_summary():
    doc = openapi.document()
    for path, methods in doc["paths"].items():
        if path in ("/healthz", "/readyz"):
            continue
        for method, op in methods.items():
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
