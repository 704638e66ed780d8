"""The diagnosis service's HTTP API as an OpenAPI document
(services/diagnosis/openapi.json), so terminals, clinics and readers can be
built from it (yigongti_kit.openapi_file).

    python -m yigongti_diagnosis.openapi          # write it
    python -m yigongti_diagnosis.openapi --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import sys

from yigongti_kit.openapi_file import CheckedInOpenAPI

from .api import add_routes

_FILE = CheckedInOpenAPI("diagnosis", add_routes, __file__)
PATH, document, render, main = _FILE.path, _FILE.document, _FILE.render, _FILE.main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
