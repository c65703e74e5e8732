"""The run engine, VAS-agnostic: how work is scheduled and how every call is gated.

- :mod:`.run`: :class:`Engine`: producer → bounded stream (:class:`Ready`) → workers in one
  task group; a waiting item lends its worker's place; stop, grace and deadline.
- :mod:`.gate`: :class:`Gate`: the one gate every call passes (first-call probe, stop,
  in-flight cap, rate controller, Retry-After, throttle learning, an answer's stop rules).
- :mod:`.stats`: :class:`RunStats`: what a run did, with the typed reason of a fatal stop.

A kind of work (creates with their exactly-once rules, deletes, shows) is a small class with
the four methods of :class:`Work`; see :mod:`batchsubmit.exactly_once` for the creates.
"""

from .gate import Gate, Stopped
from .run import Engine, Ready, Work
from .stats import RunStats

__all__ = ["Engine", "Gate", "Ready", "RunStats", "Stopped", "Work"]
