from __future__ import annotations

from gateway.public_url import public_base_url


def test_configured_base_wins() -> None:
    headers = {"x-forwarded-host": "evil.example"}
    assert (
        public_base_url("https://iiif.example.org/img/", headers, "http", "127.0.0.1:8080")
        == "https://iiif.example.org/img"
    )


def test_request_itself_when_nothing_else() -> None:
    assert public_base_url(None, {}, "http", "127.0.0.1:8080") == "http://127.0.0.1:8080"


def test_rfc7239_forwarded_first_element() -> None:
    headers = {"forwarded": 'for=1.2.3.4;proto=https;host="a.example", for=5.6.7.8;host=b'}
    assert public_base_url(None, headers, "http", "internal:8080") == "https://a.example"


def test_x_forwarded_headers_with_prefix() -> None:
    headers = {
        "x-forwarded-proto": "https, http",
        "x-forwarded-host": "lib.example, proxy",
        "x-forwarded-prefix": "/images/",
    }
    assert public_base_url(None, headers, "http", "internal") == "https://lib.example/images"
