"""Admission by waiting time: serve every request that can be answered within its budget,
refuse the rest at once.

At most `slots` requests are worked on at once in a process (MAX_IN_FLIGHT); the others wait
in one bounded line (MAX_QUEUED), first come, first served, doing nothing (no body parsed, no
connection held). A newcomer is admitted only if the wait the line predicts, plus its own
service, fits in what is left of its budget; a waiter whose budget would run out before its
service could end is dropped at the head of the line (CoDel's rule, with the request's own
deadline as the target). Either way the refusal is a fast 503 whose `Retry-After` is the time
the line needs to drain at the measured service rate.

The prediction comes from what the process just did: an exponentially weighted mean of the
service time of the last requests (time from taking a slot to giving it back), so a slow
database makes the line shorter by itself, and a fast cache lets it grow. What a request
must have left when its work starts is that mean plus four mean deviations, the estimator
TCP uses for its retransmission timer (RFC 6298): on a busy machine the service times
spread, and a request let in should not then end in 504.

MAX_QUEUED=0 is the count rule: beyond MAX_IN_FLIGHT, 503 at once.
"""

import asyncio
import math
from collections import deque

# Weight of the latest request in the mean service time: it follows a change within tens of
# requests, and one slow request does not close the door.
SMOOTHING = 0.05
INITIAL_SERVICE_S = 0.01  # until the first request has been served
# Weight of the latest request in the mean deviation (RFC 6298's beta).
DEVIATION_SMOOTHING = 0.25
DEVIATIONS = 4  # RFC 6298's K
# Whatever the spread, a request starts its work with at least this many mean service times
# left: a mean hides the slower half.
HEADROOM = 1.5
MAX_RETRY_AFTER_S = 30


class Admission:
    def __init__(self, *, slots: int, max_queued: int) -> None:
        self.slots = slots
        self.max_queued = max_queued
        self.busy = 0
        self.service_s = INITIAL_SERVICE_S
        self.deviation_s = 0.0
        self._measured = False
        self._line: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._line)

    def expected_wait_s(self) -> float:
        """How long a newcomer would wait for a slot."""
        if self.busy < self.slots and not self._line:
            return 0.0
        return (len(self._line) + 1) * self.service_s / self.slots

    def admits(self, budget_s: float) -> bool:
        """Whether a newcomer with `budget_s` left can be answered in time (and fits the line)."""
        if self.busy < self.slots and not self._line:
            return True
        return len(self._line) < self.max_queued and (
            self.expected_wait_s() + self.margin_s() < budget_s
        )

    def margin_s(self) -> float:
        """What must be left of a budget when a request starts its work."""
        return self.service_s + max((HEADROOM - 1) * self.service_s, DEVIATIONS * self.deviation_s)

    def retry_after_s(self) -> int:
        """When the line ahead of a refused request will have drained."""
        drain = (len(self._line) + self.busy) * self.service_s / self.slots
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(drain)))

    def enter(self) -> asyncio.Future[None]:
        """A ticket: done when this request holds a slot (at once when one is free)."""
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.busy < self.slots and not self._line:
            self.busy += 1
            ticket.set_result(None)
        else:
            self._line.append(ticket)
        return ticket

    def leave(self, ticket: asyncio.Future[None]) -> None:
        """Give up a ticket that was not used (its request was refused, or its client left);
        a slot it was handed meanwhile goes on to the next waiter."""
        if ticket.done():
            self._next()
        else:
            self._line.remove(ticket)
            ticket.cancel()

    def release(self, served_s: float) -> None:
        """A request that held a slot for `served_s` is done."""
        if self._measured:
            error = served_s - self.service_s
            self.deviation_s += DEVIATION_SMOOTHING * (abs(error) - self.deviation_s)
            self.service_s += SMOOTHING * error
        else:
            self.service_s, self.deviation_s, self._measured = served_s, served_s / 2, True
        self._next()

    def _next(self) -> None:
        while self._line:
            ticket = self._line.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self.busy -= 1
