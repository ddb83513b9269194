"""Ending the asyncio tasks a shell started."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` (nothing if None) and wait until it has ended.

    Its cancellation is not raised here: ending it is what was asked.

    Raises:
        Exception: any other exception the task ended with.
    """
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
