"""The referral service's HTTP API as an OpenAPI document
(services/referral/openapi.json), so coordinators' and clinics' clients can
be built from it (yigongti_kit.openapi_file).

    python -m yigongti_referral.openapi          # write it
    python -m yigongti_referral.openapi --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import sys

from yigongti_kit.openapi_file import CheckedInOpenAPI

from .api import add_routes

_FILE = CheckedInOpenAPI("referral", add_routes, __file__)
PATH, document, render, main = _FILE.path, _FILE.document, _FILE.render, _FILE.main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
