import time

from app.responses import PRIVATE, PUBLIC, public_read


def _second_of(header: str) -> int:
    assert header.startswith("@")
    return int(header.removeprefix("@"))


def test_public_read_anonymous_is_kept_by_nginx_to_the_end_of_this_second() -> None:
    before = int(time.time())
    response = public_read('{"tags":[]}', if_none_match=None, personal=False)
    after = int(time.time())
    assert response.headers["cache-control"] == PUBLIC
    assert before <= _second_of(response.headers["x-accel-expires"]) <= after


def test_public_read_not_modified_carries_the_same_expiry() -> None:
    etag = public_read('{"tags":[]}', if_none_match=None, personal=False).headers["etag"]
    before = int(time.time())
    response = public_read('{"tags":[]}', if_none_match=etag, personal=False)
    # nginx revalidates an expired copy with its ETag and keeps it as long as the 304 says.
    assert (response.status_code, response.body) == (304, b"")
    assert _second_of(response.headers["x-accel-expires"]) >= before


def test_public_read_personal_has_no_micro_cache_expiry() -> None:
    response = public_read('{"tags":[]}', if_none_match=None, personal=True)
    assert response.headers["cache-control"] == PRIVATE
    assert "x-accel-expires" not in response.headers
