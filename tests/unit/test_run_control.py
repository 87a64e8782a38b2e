"""Ctrl-C reaches the run's loop wherever it lands.

Python runs a signal handler on the main thread between two bytecodes, which can be inside the
loop's own ``inbox.get()``. The handler (``RunControl.interrupt``) puts into that inbox, so it
must take no lock that ``get()`` may be holding at that instant. With a ``queue.Queue`` it did
(its ``put`` takes the mutex its ``get`` holds): a full-suite run once hung after Ctrl-C with no
"stopping" event. Here the handler is made to land exactly there, in a thread with a deadline.
"""

from __future__ import annotations

import threading

from charpack.run.options import Interrupt, RunControl


def test_an_interrupt_landing_inside_the_loops_inbox_get_does_not_deadlock() -> None:
    control = RunControl()
    landed = threading.Event()

    def handler_inside_get() -> None:
        # What get() holds while it runs, if the inbox has such a lock (queue.Queue: mutex).
        held = getattr(control.inbox, "mutex", None)
        if held is not None:
            with held:
                control.interrupt()
        else:
            control.interrupt()
        landed.set()

    thread = threading.Thread(target=handler_inside_get, daemon=True)
    thread.start()
    thread.join(5)
    assert landed.is_set(), "interrupt() blocked on the lock the loop's inbox.get() holds"
    assert control.inbox.get(timeout=1) == Interrupt(1)


def test_each_press_is_counted_and_reaches_the_loop_in_order() -> None:
    control = RunControl()
    assert [control.interrupt() for _ in range(3)] == [1, 2, 3]
    assert [control.inbox.get(timeout=1).count for _ in range(3)] == [1, 2, 3]
