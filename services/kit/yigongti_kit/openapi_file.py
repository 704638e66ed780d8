"""A service's HTTP API as an OpenAPI document checked in beside its package
(services/<name>/openapi.json), so clients can be built from it; each
service's `openapi` module is one of these and its command line:

    python -m yigongti_<name>.openapi          # write it
    python -m yigongti_<name>.openapi --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from .http import create_http_app
from .settings import KitSettings


class CheckedInOpenAPI:
    def __init__(self, service: str, add_routes: Callable[[FastAPI], None],
                 package_file: str) -> None:
        self.service = service
        self.add_routes = add_routes
        # <repo>/services/<name>/openapi.json, beside the package's folder
        self.path = Path(package_file).resolve().parent.parent / "openapi.json"

    def document(self) -> dict:
        app = create_http_app(f"yigongti {self.service}", KitSettings(service_name=self.service))
        self.add_routes(app)  # as the service does: the document served is this one
        return app.openapi()

    @staticmethod
    def render(doc: dict) -> str:
        return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def main(self, argv: list[str]) -> int:
        text = self.render(self.document())
        if "--check" in argv:
            if not self.path.exists() or self.path.read_text() != text:
                print(f"{self.path} is out of date: run python -m "
                      f"yigongti_{self.service}.openapi", file=sys.stderr)
                return 1
            return 0
        self.path.write_text(text)
        return 0
