"""Webhook URLs: one normal form, refused for what the string says, before any lookup."""

import pytest

from app.errors import Invalid
from app.webhooks import urls
from tests.conftest import auth, token_for
from tests.factories import make_user

PUBLIC = "93.184.216.34"


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        (f"HTTPS://{PUBLIC}:443/hook#fragment", f"https://{PUBLIC}/hook"),
        (f"http://{PUBLIC}:80", f"http://{PUBLIC}/"),
        (f"http://{PUBLIC}.:8080/a/../b?x=é", f"http://{PUBLIC}:8080/b?x=%C3%A9"),
        ("http://Bücher.DE./p", "http://xn--bcher-kva.de/p"),
        ("https://[2606:2800:0220:0001::1]:8443/", "https://[2606:2800:220:1::1]:8443/"),
        ("http://[::FFFF:127.0.0.1]/", "http://[::ffff:7f00:1]/"),
        ("http://ex.com/%zz?%", "http://ex.com/%zz?%"),
        ("http://ex.com:08080/", "http://ex.com:8080/"),
    ],
)
def test_urls_take_one_normal_form(written: str, normal: str) -> None:
    parsed = urls.parse(written)
    assert parsed.url == normal
    assert urls.parse(parsed.url) == parsed


@pytest.mark.parametrize(
    "written",
    [
        f"http://{PUBLIC}/a\r\nX-Injected: 1",
        f"http://{PUBLIC}/a\nb",
        f"http://{PUBLIC}/a b",
        f"http://{PUBLIC}/a\tb",
        f"http://{PUBLIC}/\x7f",
        f"http://{PUBLIC}/\u2028",
        f"http://{PUBLIC}/\u00a0",
        f"http://{PUBLIC}/\u200b",
        f"http://{PUBLIC}/\u202e",
        "http://exa mple.com/",
        "ftp://example.com/",
        "//example.com/",
        "http:example.com",
        "http:///path",
        f"http://user:pw@{PUBLIC}/",
        f"http://user@{PUBLIC}/",
        f"http://{PUBLIC}\\@evil.com/",
        f"http://{PUBLIC}:0/",
        f"http://{PUBLIC}:65536/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://0177.0.0.1/",
        "http://[fe80::1%25eth0]/",
        "http://%31%32%37.0.0.1/",
        "http://-bad.example/",
        "http://a..b/",
        "http://" + "a" * 64 + ".example/",
        f"http://{PUBLIC}/" + "é" * 700,  # 2,000 characters once percent-encoded
    ],
)
def test_urls_are_refused_for_what_they_say(written: str) -> None:
    with pytest.raises(Invalid):
        urls.parse(written)


async def test_registration_stores_the_normal_form_and_refuses_line_breaks(
    client, session, settings
):
    headers = auth(token_for((await make_user(session)).id, settings))
    body = {"webhook": {"url": f" HTTPS://{PUBLIC}:443/hook#x ", "events": ["comment.created"]}}
    created = await client.post("/webhooks", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["webhook"]["url"] == f"https://{PUBLIC}/hook"
    [listed] = (await client.get("/webhooks", headers=headers)).json()["webhooks"]
    assert listed["url"] == f"https://{PUBLIC}/hook"

    body["webhook"]["url"] = f"http://{PUBLIC}/hook\r\nX-Injected: 1"
    refused = await client.post("/webhooks", json=body, headers=headers)
    assert refused.status_code == 422
    assert refused.json() == {
        "errors": {"body": ["url: must not contain whitespace or control characters"]}
    }
