"""What FastStream must not be used for, as properties of the code
(kit/kafka.py explains each): a scan of services/."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[3] / "services"
KIT = SERVICES / "kit" / "yigongti_kit"


def sources() -> list[Path]:
    return sorted(p for p in SERVICES.rglob("*.py") if ".egg-info" not in p.parts)


def code_lines(path: Path) -> dict[int, str]:
    """The file's code without comments and string literals (docstrings say
    what is not used, and why), by line."""
    lines: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            continue
        lines[token.start[0]] = lines.get(token.start[0], "") + " " + token.string
    return lines


def uses(pattern: str, *, allowed: tuple[Path, ...] = ()) -> list[str]:
    found = []
    for path in sources():
        if path in allowed:
            continue
        for number, line in code_lines(path).items():
            if re.search(pattern, line.replace(" . ", ".").replace(" .", ".")):
                found.append(f"{path.relative_to(SERVICES)}:{number}: {line.strip()}")
    return found


# The load generator's answer reader (terminal/load.py) is a client-side
# observer, like the demo's and the tests' readers: assigned partitions, no
# group, nothing committed or handled; not a service's subscriber.
LOAD_OBSERVER = SERVICES / "terminal" / "yigongti_terminal" / "load.py"


@pytest.mark.parametrize("pattern, why", [
    (r"\bgetmany\b|\bgetone\b", "FastStream polls; no service polls Kafka itself"),
    (r"\bpublish_batch\b", "one partition for the whole batch, per-record headers dropped"),
    (r"\bKafkaRouter\b|faststream\.kafka\.fastapi|faststream_fastapi",
     "its /asyncapi/try route publishes unauthenticated"),
    (r"AsgiFastStream|asyncapi_path", "serves the try-it-out route once docs are on"),
    (r"KafkaTelemetryMiddleware|faststream\.opentelemetry",
     "a batch starts a new root trace; publish overwrites the stored traceparent"),
    (r"\bTestKafkaBroker\b", "an in-memory mock of the broker"),
])
def test_services_do_not_use(pattern, why):
    allowed = (LOAD_OBSERVER,) if "getmany" in pattern else ()
    assert uses(pattern, allowed=allowed) == [], why


def test_only_the_kit_builds_subscribers():
    # A subscriber built elsewhere would miss MANUAL acks, the raw parser and
    # the kit's handling; kafka.py builds every service's, dlq.py reads by hand.
    assert uses(r"\.subscriber\(", allowed=(KIT / "kafka.py", KIT / "dlq.py")) == []


def test_handlers_get_raw_records_never_typed_bodies():
    # With apply_types FastStream validates bodies with pydantic, and its
    # error logs quote the values (personal data).
    text = (KIT / "kafka.py").read_text()
    assert "apply_types=False" in text
    assert "ack_policy=AckPolicy.MANUAL" in text
    assert "allow_auto_create_topics=False" in text
