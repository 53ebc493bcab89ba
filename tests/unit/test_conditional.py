from __future__ import annotations

from datetime import UTC, datetime

from gateway.conditional import etag_for, not_modified

MODIFIED = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)


def test_etag_differs_per_representation_and_version() -> None:
    a = etag_for("v1", "full/max/0/default.jpg")
    assert a != etag_for("v1", "full/max/0/default.png")
    assert a != etag_for("v2", "full/max/0/default.jpg")
    assert a == etag_for("v1", "full/max/0/default.jpg")
    assert a.startswith('"')
    assert a.endswith('"')


def test_if_none_match() -> None:
    tag = etag_for("v", "r")
    assert not_modified(tag, MODIFIED, tag, None)
    assert not_modified(tag, MODIFIED, f'"other", W/{tag}', None)
    assert not_modified(tag, MODIFIED, "*", None)
    assert not not_modified(tag, MODIFIED, '"other"', None)


def test_if_none_match_wins_over_if_modified_since() -> None:
    tag = etag_for("v", "r")
    assert not not_modified(tag, MODIFIED, '"other"', "Fri, 02 Jan 2026 03:04:05 GMT")


def test_if_modified_since() -> None:
    tag = etag_for("v", "r")
    assert not_modified(tag, MODIFIED, None, "Fri, 02 Jan 2026 03:04:05 GMT")
    assert not not_modified(tag, MODIFIED, None, "Fri, 02 Jan 2026 03:04:04 GMT")
    assert not not_modified(tag, MODIFIED, None, "not a date")
    assert not not_modified(tag, MODIFIED, None, None)
