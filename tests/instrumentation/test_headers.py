"""Headers as text: ASGI's bytes pairs and WSGI's text pairs read alike."""

from __future__ import annotations

from tallyhub.instrumentation.headers import first, text_headers


def test_asgi_and_wsgi_headers_read_alike() -> None:
    asgi = [(b"Content-Type", b"application/json"), (b"x-tag", b"caf\xe9"), (b"X-TAG", b"second")]
    wsgi = [("Content-Type", "application/json"), ("X-Tag", "café"), ("x-tag", "second")]
    assert (
        text_headers(asgi)
        == text_headers(wsgi)
        == [
            ("content-type", "application/json"),
            ("x-tag", "café"),  # latin-1, as HTTP/1.1 carries it
            ("x-tag", "second"),
        ]
    )
    text = text_headers(asgi)
    assert first(text, "x-tag") == "café"  # the first of repeated ones
    assert first(text, "content-encoding") == ""
