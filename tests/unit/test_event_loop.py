"""The worker's event loop choice: uvloop by default when installed, asyncio on request."""

from __future__ import annotations

import asyncio

import pytest

from router_stream.event_loop import EVENT_LOOP_ENV, install_event_loop


@pytest.fixture
def restore_policy():
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


def test_asyncio_on_request_leaves_the_policy(restore_policy):
    before = asyncio.get_event_loop_policy()
    assert install_event_loop({EVENT_LOOP_ENV: "asyncio"}) == "asyncio"
    assert asyncio.get_event_loop_policy() is before


def test_uvloop_by_default(restore_policy):
    uvloop = pytest.importorskip("uvloop")
    assert install_event_loop({}) == "uvloop"
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_unknown_choice_says_what_is_allowed(restore_policy):
    with pytest.raises(ValueError, match="'uvloop' or 'asyncio'"):
        install_event_loop({EVENT_LOOP_ENV: "trio"})
