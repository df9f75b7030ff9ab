"""Ctrl-C during `qraft analyze`: a signal raises KeyboardInterrupt at once, and one that a Dagster run or
the lander's event loop took for its own clean stop is still noticed at the next check."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from dagster._utils.interrupts import capture_interrupts

from qraft_cli.analyze import interrupts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_interrupts_at_once(sig: signal.Signals) -> None:
    with pytest.raises(KeyboardInterrupt), interrupts():
        os.kill(os.getpid(), sig)
        signal.sigtimedwait([], 0)  # a point where Python runs handlers
        pytest.fail("the signal did not interrupt")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_signal_a_dagster_run_swallowed_is_noticed_by_the_check() -> None:
    with interrupts() as check:
        check()  # nothing received yet
        with capture_interrupts():  # as a Dagster run executes: the signal fails the run, nothing raises
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0)
        with pytest.raises(KeyboardInterrupt):
            check()
        check()  # reported once


def test_a_signal_the_event_loop_took_is_noticed_after_it_resets_the_wakeup_fd() -> None:
    async def land_until_signal() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)  # as the lander does
        os.kill(os.getpid(), signal.SIGINT)
        await stop.wait()
        loop.remove_signal_handler(signal.SIGINT)

    with interrupts() as check:
        asyncio.run(land_until_signal())
        check()  # the loop's own handling: the lander returns, the service raises for it
        with capture_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0)
        with pytest.raises(KeyboardInterrupt):
            check()
