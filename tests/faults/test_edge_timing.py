"""The fault suite's judge of slow 503s: nginx's own time for the request, not the client's."""

from tests.faults.load import slow_at_the_edge

LOG = (
    '127.0.0.1 [t] "GET /api/tags HTTP/1.1" 503 67 rid=fast1 rt=3.519 urt=3.519\n'
    '127.0.0.1 [t] "GET /api/tags HTTP/1.1" 503 67 rid=slow1 rt=9.204 urt=9.204\n'
    "a line without the fields\n"
)


def test_a_503_nginx_answered_fast_is_fast_whatever_the_client_saw() -> None:
    slow = {"fast1": "GET /api/tags -> 503 in 8.77s", "slow1": "GET /api/tags -> 503 in 9.3s"}
    assert slow_at_the_edge(slow, LOG) == ["GET /api/tags -> 503 in 9.3s"]


def test_a_503_nginx_never_logged_counts_as_slow() -> None:
    assert slow_at_the_edge({"gone": "GET /api/tags -> 503"}, LOG) == ["GET /api/tags -> 503"]
