"""The referral contracts and the state machine speak the same language: the
machine's facts and events have the contracts' fields, it refuses only with
the published reason codes, and every example validates strictly."""

from __future__ import annotations

import dataclasses

import pytest
from yigongti_contracts.examples import EXAMPLE_OUTCOMES, EXAMPLE_SENDERS, EXAMPLES
from yigongti_contracts.referral import rejections, v1
from yigongti_referral import events, facts
from yigongti_referral.codes import Refusal


def test_the_refusals_are_the_published_reason_codes() -> None:
    assert {r.value for r in Refusal} == set(rejections.REASONS)


@pytest.mark.parametrize("model", v1.INTAKE, ids=lambda m: m.__name__)
def test_each_intake_contract_has_the_facts_fields(model) -> None:
    fact = getattr(facts, model.__name__)
    assert [f.name for f in dataclasses.fields(fact)] == list(model.model_fields)


@pytest.mark.parametrize("model", [m for m in v1.EVENTS if hasattr(events, m.__name__)],
                         ids=lambda m: m.__name__)
def test_each_event_the_machine_emits_has_the_contracts_fields(model) -> None:
    event = getattr(events, model.__name__)
    assert {f.name for f in dataclasses.fields(event)} == set(model.model_fields)


def test_every_machine_event_is_a_contract() -> None:
    names = {m.__name__ for m in v1.EVENTS}
    assert {t.__name__ for t in events.Event.__args__} <= names


@pytest.mark.parametrize("model", v1.CONTRACTS, ids=lambda m: m.__name__)
def test_examples_validate_strictly(model) -> None:
    example = EXAMPLES[model]
    assert model.model_validate_json(example.model_dump_json(), strict=True) == example


def test_every_intake_example_has_a_sender_and_an_outcome() -> None:
    for model in v1.INTAKE:
        assert model in EXAMPLE_SENDERS and model in EXAMPLE_OUTCOMES


def test_the_examples_are_sent_by_the_dev_terminals() -> None:
    from yigongti_contracts.referral.examples import EXAMPLE_SENDERS as REFERRAL_SENDERS
    from yigongti_deploy.devkeys import REFERRAL_TERMINALS

    assert set(REFERRAL_SENDERS.values()) == set(REFERRAL_TERMINALS.items())
