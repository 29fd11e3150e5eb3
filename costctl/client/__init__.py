"""The gateway's client for the costctl API: authorize, settle, release, batched usage.

One ``Costctl`` (sync, httpx.Client) or ``AsyncCostctl`` (asyncio, httpx.AsyncClient) per
gateway process. Per request: ``authorize`` before the model call; afterwards either
``settle`` (posts the one usage event with ``id = reservation_id`` and waits for the ack) or
``usage_batcher().add(event)``, which queues it and posts batches (flush by count or age,
retries with backoff re-sending the same event ids, bounded queue, flush on close). The API's
idempotency key is (source, id), so a re-sent batch never counts an event twice.
"""

from costctl.client.aio import AsyncCostctl, AsyncUsageBatcher
from costctl.client.policy import BatchPolicy, DeliveryError, RetryPolicy, UsageStats
from costctl.client.sync import Costctl, UsageBatcher

__all__ = [
    "AsyncCostctl",
    "AsyncUsageBatcher",
    "BatchPolicy",
    "Costctl",
    "DeliveryError",
    "RetryPolicy",
    "UsageBatcher",
    "UsageStats",
]
