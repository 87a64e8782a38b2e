"""The error policy of a worker's control thread, shared by a ComfyUI server's worker and an
endpoint's (:class:`ControlLoop`).

A turn of the thread carries out the commands it took. What can go wrong becomes a message to
the runner, the same way for every kind of worker:

- refused credentials: :class:`~charpack.run.messages.Unusable` (``auth``), and the thread ends;
- the target stopped answering (the worker's ``down_errors``): it is marked down and probed
  again;
- anything else is a bug: logged with its traceback, reported as ``Unusable`` (not ``auth``,
  with the message redacted: it may quote what the server sent), and the thread ends, so that
  a bug never silently stalls the whole run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from ..comfy.auth import redact
from ..errors import AuthError, ServerUnavailable
from .messages import CommandInbox, Unusable

log = logging.getLogger(__name__)


class ControlLoop(CommandInbox):
    """A worker's control-thread side: :meth:`_turn` runs one step under the shared policy."""

    name: str
    config: Any  # a ServerConfig or an EndpointConfig: anything with a ``label``
    inbox: Any  # the runner's queue (its ``put``)
    down_errors: ClassVar[tuple[type[Exception], ...]] = (ServerUnavailable,)

    def _set_up(self, up: bool, reason: str = "") -> None:
        raise NotImplementedError

    def _turn(self, step: Callable[[Any], None], taken: Any) -> bool:
        """Run ``step(taken)``; False when the thread must end (the worker gets no more jobs)."""
        try:
            step(taken)
        except AuthError as exc:
            self.inbox.put(Unusable(self.name, str(exc)))
            return False
        except self.down_errors as exc:
            self._set_up(False, str(exc))
        except Exception as exc:
            log.exception("%s: worker failed", self.config.label)
            said = redact(f"{self.config.label}: {exc!r}")
            self.inbox.put(Unusable(self.name, said, auth=False))
            return False
        return True
