"""Push invalidation for the in-process tier: every commit's version bumps, heard by every
worker of the cluster over one Redis pub/sub channel.

A writer bumps its versions, a global sequence number and publishes `<seq>\\n<names>` in one
Lua script (`PUBLISH_SCRIPT`), so messages leave Redis in sequence order and a bump is never
without its message. Each worker runs one `Listener`, which drops the named entries from its
L1 and remembers the last sequence number it applied.

Readers ask two questions (app/cache/store.py):
- `trusted`: the listener is subscribed and has heard every message since it emptied L1.
  Anonymous readers use L1 only then: what they may miss is what is still in flight, a
  bounded, short delay (docs/ARCHITECTURE.md "Cache").
- `caught_up(seq)`: it has applied every message up to the cluster's current sequence number.
  A logged-in reader, who may be the writer of a moment ago on another worker, uses L1 only
  then, so a writer always reads their own write.

Whenever the listener cannot be sure it heard everything (not yet subscribed, connection
lost, a gap in the sequence, silence on a ping), it empties L1 and stops trusting it until
it has subscribed again.
"""

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.cache.local import LocalCache

log = logging.getLogger("conduit.cache")

CHANNEL = "conduit:invalidations"
SEQUENCE = "v:__sequence__"
PING_S = 1.0  # silence this long: ask Redis whether the connection still lives
DEAD_S = 3.0  # silence this long, pings included: it does not
RETRY_S = 0.5

# KEYS: the version keys to bump. ARGV: the sequence key, the channel, the names.
PUBLISH_SCRIPT = """
for _, key in ipairs(KEYS) do redis.call('INCR', key) end
local seq = redis.call('INCR', ARGV[1])
redis.call('PUBLISH', ARGV[2], seq .. '\\n' .. ARGV[3])
return seq
"""


class Listener:
    def __init__(self, url: str, local: LocalCache, *, connect_timeout_s: float) -> None:
        self.url = url
        self.local = local
        self.connect_timeout_s = connect_timeout_s
        self.trusted = False
        self.applied = 0
        self._task: asyncio.Task[None] | None = None

    def caught_up(self, sequence: int) -> bool:
        return self.trusted and self.applied >= sequence

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cache-invalidations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._distrust()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (RedisError, OSError, TimeoutError, ValueError) as exc:
                if self.trusted:
                    log.warning("cache invalidations lost (%s): L1 emptied", type(exc).__name__)
            self._distrust()
            await asyncio.sleep(RETRY_S)

    async def _listen(self) -> None:
        # A connection of its own, without the shared client's short read timeout: it waits.
        client = Redis.from_url(
            self.url, socket_connect_timeout=self.connect_timeout_s, socket_keepalive=True
        )
        async with client, client.pubsub() as pubsub:
            await pubsub.subscribe(CHANNEL)
            async with asyncio.timeout(DEAD_S):  # from the confirmation on, we hear everything
                while (await pubsub.get_message(timeout=DEAD_S) or {}).get("type") != "subscribe":
                    pass
            # What was published before the subscription may not have been heard: forget it.
            self.local.flush()
            self.applied = int(await client.get(SEQUENCE) or 0)
            self.trusted = True
            heard = time.monotonic()
            while True:
                message = await pubsub.get_message(timeout=PING_S)
                if message is not None:
                    heard = time.monotonic()
                    if message["type"] == "message":
                        self._apply(message["data"])
                elif time.monotonic() - heard > DEAD_S:
                    raise TimeoutError("no answer on the invalidation channel")
                else:
                    await pubsub.ping()

    def _apply(self, data: bytes) -> None:
        head, _, body = data.partition(b"\n")
        sequence = int(head)
        if sequence <= self.applied:  # published before our flush: already forgotten
            return
        if sequence != self.applied + 1:
            raise ValueError(f"invalidation {self.applied + 1} to {sequence - 1} missed")
        self.local.invalidate(body.decode().split("\n") if body else ())
        self.applied = sequence

    def _distrust(self) -> None:
        self.trusted = False
        self.local.flush()
