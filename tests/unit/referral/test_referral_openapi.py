"""The checked-in OpenAPI document matches the referral service's routes, and
documents them: a summary, the roles that may call, and the 404 of scoping."""

from yigongti_referral import openapi


def test_checked_in_openapi_is_current():
    assert openapi.PATH.read_text() == openapi.render(openapi.document()), \
        "run: python -m yigongti_referral.openapi"


def test_every_route_has_a_summary_and_its_roles():
    doc = openapi.document()
    for path, methods in doc["paths"].items():
        if path in ("/healthz", "/readyz"):
            continue
        for method, op in methods.items():
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
            if "{referral_id}" in path:
                assert "404" in op["responses"], f"{method.upper()} {path}"
