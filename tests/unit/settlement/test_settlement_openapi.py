"""The checked-in OpenAPI document matches the settlement's routes, documents
them, and names the roles that may call each."""

from yigongti_settlement import openapi


def test_checked_in_openapi_is_current():
    assert openapi.PATH.read_text() == openapi.render(openapi.document()), \
        "run: python -m yigongti_settlement.openapi"


def test_every_route_has_a_summary_and_roles():
    doc = openapi.document()
    for path, methods in doc["paths"].items():
        if path in ("/healthz", "/readyz"):
            continue
        for method, op in methods.items():
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
            assert op.get("security"), f"{method.upper()} {path} names no role"


def test_no_route_takes_an_id_number_in_its_path_or_query():
    doc = openapi.document()
    for path, methods in doc["paths"].items():
        assert "id_number" not in path
        for op in methods.values():
            for param in op.get("parameters", []):
                assert param["name"] not in ("id_number", "card_sn", "settlement_token")
