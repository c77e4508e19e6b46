"""Ctrl-C and SIGTERM: a stop request first, an interruption the second time."""

import os
import signal

import pytest

from mltrain.signals import StopRequested, stop_on_signals


def test_the_first_ctrl_c_asks_for_a_stop_and_the_second_interrupts():
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"  # no exception: the loop stops at a step's end
        with pytest.raises(StopRequested):
            stop.check()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_at_start_up_a_stop_ends_at_once_and_a_nested_block_shares_the_flag():
    with stop_on_signals(at_once=True) as outer:
        with stop_on_signals() as inner:  # the loop defers...
            assert inner is outer
            os.kill(os.getpid(), signal.SIGTERM)
            assert inner.requested and inner.signal_name == "SIGTERM"
        with pytest.raises(StopRequested):  # ...start-up does not: a request already made ends it on entry
            with stop_on_signals(at_once=True):
                pass
