"""A replay waits out a group coordinator that is still loading or moving instead of failing the command."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from bridge.deadletters.replay import retrying


def refusing(times: int, code: int) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise KafkaException(KafkaError(code))
        return "committed offsets"

    return calls, call


@pytest.mark.parametrize(
    "code",
    [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE],
)
def test_a_coordinator_still_loading_is_asked_again(code: int) -> None:
    # librdkafka raises these from committed() without marking them retriable: a broker just started answers so.
    calls, call = refusing(2, code)
    assert retrying(call) == "committed offsets"
    assert len(calls) == 3


def test_an_error_that_will_not_pass_is_raised_at_once() -> None:
    calls, call = refusing(1, KafkaError.GROUP_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        retrying(call)
    assert len(calls) == 1
