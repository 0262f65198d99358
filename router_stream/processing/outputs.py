"""The JSON of a fetched batch's outputs, made before its transaction begins.

Apart from the loop (``processor.py``) because it is the one step of the commit that can turn
a record's answer into something else: an output that cannot be serialized, or that no Kafka
record could carry, becomes an ``internal_error`` dead letter here, so a batch that could never
be produced does not abort and re-read forever and stall its partition.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import TopicsConfig
from .answers import output_budget
from .handler import Handler
from .intake import Poison
from .partition import Outcome, Source

log = logging.getLogger(__name__)

__all__ = ["serialize_outputs"]


def serialize_outputs(
    topics: TopicsConfig, handler: Handler, records: list[Any], outcomes: list[Outcome]
) -> list[list[tuple[str, bytes]]]:
    """Per record, its ``(topic, JSON value)`` outputs: response, audit, dead letter, in that order.

    A record whose outputs cannot be serialized (e.g. a model answer with a lone surrogate) or
    would be over the producer's record limit becomes an ``internal_error`` dead letter instead.
    """
    t = topics
    out: list[list[tuple[str, bytes]]] = []
    for record, outcome in zip(records, outcomes):
        problem = None
        try:
            values = []
            if outcome.response is not None:
                values.append((t.responses, outcome.response_json()))
            if outcome.audit is not None:
                values.append((t.audit, outcome.audit.model_dump_json(exclude_none=True).encode()))
            if outcome.dead_letter is not None:
                values.append(
                    (t.dead_letter, outcome.dead_letter.model_dump_json(exclude_none=True).encode())
                )
        except (ValueError, TypeError, UnicodeError) as exc:
            problem = (f"the answer could not be serialized ({type(exc).__name__})", type(exc).__name__)
        else:  # the handler keeps answers within a record; anything else too big is a bug, not a stall
            budget = output_budget(record.key)
            big = next(((topic, len(v)) for topic, v in values if len(v) > budget), None)
            if big is not None:
                problem = (
                    f"the {big[0]} record would be {big[1]} bytes, over the {budget}-byte limit",
                    "RecordTooLarge",
                )
        if problem is not None:
            log.error(
                "%s[%d]@%d: %s; dead-lettering it", record.topic, record.partition, record.offset, problem[0]
            )
            source = Source(record.topic, record.partition, record.offset, record.key, record.value)
            dead = handler.dead_letter(source, Poison("internal_error", problem[0]), error_class=problem[1])
            assert dead.dead_letter is not None
            values = [(t.dead_letter, dead.dead_letter.model_dump_json(exclude_none=True).encode())]
        out.append(values)
    return out
