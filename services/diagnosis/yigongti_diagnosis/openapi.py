"""The diagnosis service's HTTP API as an OpenAPI document, checked in beside the package
(services/diagnosis/openapi.json) so terminals, clinics and readers can be built from it.

    python -m yigongti_diagnosis.openapi          # write it
    python -m yigongti_diagnosis.openapi --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from yigongti_kit.http import create_http_app
from yigongti_kit.settings import KitSettings

from .api import add_routes

PATH = Path(__file__).resolve().parent.parent / "openapi.json"


def document() -> dict:
    app = create_http_app("yigongti diagnosis", KitSettings(service_name="diagnosis"))
    add_routes(app)  # as the service does: the document served is this one
    return app.openapi()


def render(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render(document())
    if "--check" in argv:
        if not PATH.exists() or PATH.read_text() != text:
            print(f"{PATH} is out of date: run python -m yigongti_diagnosis.openapi", file=sys.stderr)
            return 1
        return 0
    PATH.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
