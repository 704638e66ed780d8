"""The checked-in OpenAPI document matches the diagnosis service's routes, and
documents them: summaries, roles, the same 404 for absent and out of scope."""

from yigongti_diagnosis import openapi

DOC = openapi.document()


def test_checked_in_openapi_is_current():
    assert openapi.PATH.read_text() == openapi.render(DOC), \
        "run: python -m yigongti_diagnosis.openapi"


def test_every_route_has_a_summary_and_names_its_roles():
    for path, methods in DOC["paths"].items():
        if path in ("/healthz", "/readyz"):
            continue
        for method, op in methods.items():
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
            roles = {r for alt in op.get("security", []) for r in alt["HTTPBearer"]}
            assert roles <= {"clinician", "clinic_terminal", "diagnostician"}, path
            assert roles, path


def test_request_paths_answer_absent_and_out_of_scope_alike():
    for path, methods in DOC["paths"].items():
        if "{request_id}" in path:
            for op in methods.values():
                assert "404" in op["responses"], path


def test_the_upload_documents_its_formats_and_limit():
    op = DOC["paths"]["/recordings"]["post"]
    assert set(op["requestBody"]["content"]) == {"application/dicom", "text/csv"}
    assert op["x-max-body-bytes"] == 16 * 1024 * 1024
