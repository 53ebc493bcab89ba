"""Parsing IIIF Image API paths: the spec's own examples, strict grammar, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.iiif import parse_v2, parse_v3
from gateway.iiif.canonical import serialize
from gateway.iiif.errors import IIIFError
from gateway.iiif.parse import parse_path
from gateway.iiif.types import (
    KNOWN_FORMATS,
    QUALITIES,
    SUPPORTED_FORMATS,
    ApiVersion,
    BaseRequest,
    Format,
    FullRegion,
    ImageRequest,
    InfoRequest,
    PercentRegion,
    PixelRegion,
    Region,
    Size,
    SquareRegion,
)

V2 = ApiVersion.V2
V3 = ApiVersion.V3
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _image(path: str, version: ApiVersion = V3) -> ImageRequest:
    result = parse_path(version, path)
    assert isinstance(result, ImageRequest)
    return result


def _error(path: str, version: ApiVersion = V3) -> IIIFError:
    with pytest.raises(IIIFError) as info:
        parse_path(version, path)
    return info.value


# --- The URI encoding tables (3.0 and 2.1 section 9), decoded and re-encoded. -----------------
# The spec's rows leave out the format; ".jpg" is added here because 2.1 and 3.0 require one.
_SPEC_IDENTIFIERS = [
    ("id1", "id1"),
    ("bb157hs6068", "bb157hs6068"),
    ("ark:/12025/654xz321", "ark:%2F12025%2F654xz321"),
    ("urn:foo:a123,456", "urn:foo:a123,456"),
    (
        "urn:sici:1046-8188(199501)13:1%3C69:FTTHBI%3E2.0.TX;2-4",
        "urn:sici:1046-8188(199501)13:1%253C69:FTTHBI%253E2.0.TX;2-4",
    ),
    ("http://example.com/?54#a", "http:%2F%2Fexample.com%2F%3F54%23a"),
]


@pytest.mark.parametrize(("identifier", "encoded"), _SPEC_IDENTIFIERS)
@pytest.mark.parametrize(("version", "size"), [(V3, "max"), (V2, "full")])
def test_spec_encoding_table(identifier: str, encoded: str, version: ApiVersion, size: str) -> None:
    path = f"{encoded}/full/{size}/0/default.jpg"
    req = _image(path, version)
    assert req.identifier == identifier
    assert req.region == FullRegion()
    assert serialize(req) == path


@pytest.mark.parametrize(
    ("path", "region", "size", "rotation", "quality", "fmt"),
    [
        (
            "id1/0,10,100,200/pct:50/90/default.png",
            PixelRegion(0, 10, 100, 200),
            Size("pct", percent=50.0),
            90.0,
            "default",
            "png",
        ),
        (
            "id1/pct:10,10,80,80/50,/22.5/color.jpg",
            PercentRegion(10.0, 10.0, 80.0, 80.0),
            Size("w", 50),
            22.5,
            "color",
            "jpg",
        ),
        (
            "bb157hs6068/full/max/270/gray.jpg",
            FullRegion(),
            Size("max"),
            270.0,
            "gray",
            "jpg",
        ),
    ],
)
def test_spec_parameter_rows(
    path: str, region: Region, size: Size, rotation: float, quality: str, fmt: str
) -> None:
    req = _image(path)
    assert (req.region, req.size, req.rotation, req.quality, req.format) == (
        region,
        size,
        rotation,
        quality,
        fmt,
    )
    assert serialize(req) == path


def test_missing_format_is_400() -> None:
    err = _error("id1/full/max/0/default")
    assert (err.status, err.parameter) == (400, "format")


# --- Region examples (3.0 and 2.1 section 4.1). ----------------------------------------------
@pytest.mark.parametrize("version", [V2, V3])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("full", FullRegion()),
        ("square", SquareRegion()),
        ("125,15,120,140", PixelRegion(125, 15, 120, 140)),
        ("pct:41.6,7.5,40,70", PercentRegion(41.6, 7.5, 40.0, 70.0)),
        ("125,15,200,200", PixelRegion(125, 15, 200, 200)),
        ("pct:41.6,7.5,66.6,100", PercentRegion(41.6, 7.5, 66.6, 100.0)),
        ("0,0,2147483647,1", PixelRegion(0, 0, 2**31 - 1, 1)),
        ("pct:0.5,.5,5.,100", PercentRegion(0.5, 0.5, 5.0, 100.0)),
        ("007,0,1,1", PixelRegion(7, 0, 1, 1)),
    ],
)
def test_region_examples(version: ApiVersion, text: str, expected: Region) -> None:
    grammar = parse_v3 if version == V3 else parse_v2
    assert grammar.parse_region(text) == expected
    assert _image(f"id/{text}/max/0/default.jpg").region == expected


_BAD_NUMBERS = [
    "+1",
    "-1",
    "1e3",
    "1E3",
    "nan",
    "NaN",
    "inf",
    "infinity",
    " 1",
    "1 ",
    "0x10",
    "1_000",
    "\u0661\u0662",  # Arabic-Indic digits, which int() would accept
    "\uff11",  # fullwidth 1
    "1..2",
    ".",
    "",
]


@pytest.mark.parametrize("bad", _BAD_NUMBERS)
def test_region_rejects_non_numbers(bad: str) -> None:
    for text in (f"{bad},0,10,10", f"0,0,10,{bad}", f"pct:{bad},0,10,10"):
        with pytest.raises(IIIFError) as info:
            parse_v3.parse_region(text)
        assert (info.value.status, info.value.parameter) == (400, "region")


@pytest.mark.parametrize(
    "text",
    [
        "0,0,0,10",
        "0,0,10,0",
        "pct:0,0,0,10",
        "pct:0,0,10,0.0",
        "0,0,10",
        "0,0,10,10,10",
        "1.5,0,10,10",
        "pct:",
        "pct:1,2,3",
        "Full",
        "FULL",
        "squares",
        "0,0,2147483648,10",
        "0,0," + "9" * 5000 + ",10",
        "pct:0,0,1" + "0" * 100 + ",10",
        "",
    ],
)
def test_region_rejects(text: str) -> None:
    with pytest.raises(IIIFError) as info:
        parse_v3.parse_region(text)
    assert (info.value.status, info.value.parameter) == (400, "region")


# --- Size examples (3.0 and 2.1 section 4.2). -----------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max", Size("max")),
        ("^max", Size("max", upscale=True)),
        ("150,", Size("w", 150)),
        ("^360,", Size("w", 360, upscale=True)),
        (",150", Size("h", None, 150)),
        ("^,240", Size("h", None, 240, upscale=True)),
        ("pct:50", Size("pct", percent=50.0)),
        ("^pct:120", Size("pct", percent=120.0, upscale=True)),
        ("pct:100", Size("pct", percent=100.0)),
        ("pct:0.5", Size("pct", percent=0.5)),
        ("225,100", Size("wh", 225, 100)),
        ("^360,360", Size("wh", 360, 360, upscale=True)),
        ("!225,100", Size("confined", 225, 100)),
        ("^!360,360", Size("confined", 360, 360, upscale=True)),
    ],
)
def test_size_examples_v3(text: str, expected: Size) -> None:
    assert parse_v3.parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "full",  # 3.0 replaced it with max
        "pct:120",  # above 100 needs ^ (the spec's example table omits it by mistake)
        ",^240",  # the example table's typo for ^,240
        "pct:0",
        "^pct:0",
        "0,",
        ",0",
        "0,10",
        "!0,10",
        "!10,",
        "!,10",
        ",",
        "^",
        "^^max",
        "!^10,10",
        "^full",
        "10",
        "10,10,10",
        "Max",
        "pct:1e2",
        "pct:-5",
        "pct:nan",
        "2147483648,",
        "",
    ],
)
def test_size_rejects_v3(text: str) -> None:
    with pytest.raises(IIIFError) as info:
        parse_v3.parse_size(text)
    assert (info.value.status, info.value.parameter) == (400, "size")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("full", Size("max", full=True)),
        ("max", Size("max")),
        ("150,", Size("w", 150)),
        (",150", Size("h", None, 150)),
        ("pct:50", Size("pct", percent=50.0)),
        ("pct:120", Size("pct", percent=120.0)),  # sizeAboveFull needs no prefix in 2.1
        ("225,100", Size("wh", 225, 100)),
        ("!225,100", Size("confined", 225, 100)),
    ],
)
def test_size_examples_v2(text: str, expected: Size) -> None:
    assert parse_v2.parse_size(text) == expected
    assert serialize(_image(f"id/full/{text}/0/default.jpg", V2)) == f"id/full/{text}/0/default.jpg"


@pytest.mark.parametrize(
    "text", ["^max", "^150,", "^pct:50", "^!225,100", "pct:0", "0,", "Full", "", "!10,"]
)
def test_size_rejects_v2(text: str) -> None:
    with pytest.raises(IIIFError) as info:
        parse_v2.parse_size(text)
    assert (info.value.status, info.value.parameter) == (400, "size")


# --- Rotation examples (section 4.3). --------------------------------------------------------
@pytest.mark.parametrize("version", [V2, V3])
@pytest.mark.parametrize(
    ("text", "degrees", "mirror"),
    [
        ("0", 0.0, False),
        ("180", 180.0, False),
        ("90", 90.0, False),
        ("22.5", 22.5, False),
        ("!0", 0.0, True),
        ("!180", 180.0, True),
        ("360", 0.0, False),
        ("!360", 0.0, True),
        ("359.999", 359.999, False),
        ("0.5", 0.5, False),
        ("45.", 45.0, False),
        (".5", 0.5, False),
    ],
)
def test_rotation_examples(version: ApiVersion, text: str, degrees: float, mirror: bool) -> None:
    grammar = parse_v3 if version == V3 else parse_v2
    assert grammar.parse_rotation(text) == (degrees, mirror)
    req = _image(f"id/full/max/{text}/default.jpg", version)
    assert (req.rotation, req.mirror) == (degrees, mirror)


@pytest.mark.parametrize("text", [*_BAD_NUMBERS, "360.1", "361", "!!90", "!", "90!", "-90", "!-0"])
def test_rotation_rejects(text: str) -> None:
    with pytest.raises(IIIFError) as info:
        parse_v3.parse_rotation(text)
    assert (info.value.status, info.value.parameter) == (400, "rotation")


# --- Quality and format (sections 4.4, 4.5). -------------------------------------------------
@pytest.mark.parametrize("version", [V2, V3])
@pytest.mark.parametrize("quality", QUALITIES)
@pytest.mark.parametrize("fmt", sorted(SUPPORTED_FORMATS))
def test_quality_format_examples(version: ApiVersion, quality: str, fmt: str) -> None:
    req = _image(f"id/full/max/0/{quality}.{fmt}", version)
    assert (req.quality, req.format) == (quality, fmt)


@pytest.mark.parametrize("version", [V2, V3])
@pytest.mark.parametrize("quality", ["native", "grey", "Default", "colour", "", "default "])
def test_quality_rejects(version: ApiVersion, quality: str) -> None:
    err = _error(f"id/full/max/0/{quality}.jpg", version)
    assert (err.status, err.parameter) == (400, "quality")


@pytest.mark.parametrize("fmt", ["xyz", "JPG", "jpeg", "", "jpg.jpg", "tiff", "jpg "])
def test_format_rejects_garbage_with_400(fmt: str) -> None:
    err = _error(f"id/full/max/0/default.{fmt}")
    assert (err.status, err.parameter) == (400, "format")


@pytest.mark.parametrize("version", [V2, V3])
def test_known_but_unserved_format_is_501(version: ApiVersion) -> None:
    unserved: list[Format] = [f for f in KNOWN_FORMATS if f not in SUPPORTED_FORMATS]
    assert unserved == ["pdf"]
    assert parse_v3.parse_quality_format("default.pdf") == ("default", "pdf")
    err = _error("id/full/max/0/default.pdf", version)
    assert (err.status, err.parameter) == (501, "format")


def test_syntax_errors_win_over_501() -> None:
    assert _error("id/nope/max/0/default.pdf").status == 400
    assert _error("id/full/max/0/nope.pdf").status == 400


# --- Path structure and identifiers. ---------------------------------------------------------
@pytest.mark.parametrize("version", [V2, V3])
def test_info_and_base_requests(version: ApiVersion) -> None:
    assert parse_path(version, "a%2Fb/info.json") == InfoRequest("a/b", version)
    assert parse_path(version, "a%2Fb") == BaseRequest("a/b", version)
    assert parse_path(version, "info.json") == BaseRequest("info.json", version)
    # Literal slashes: viewers send them; the parameters are taken from the right.
    assert parse_path(version, "ark:/12025/654xz321/info.json") == InfoRequest(
        "ark:/12025/654xz321", version
    )
    assert parse_path(version, "a/b/c/d/info.json") == InfoRequest("a/b/c/d", version)


def test_literal_slashes_in_image_request() -> None:
    req = _image("ark:/12025/654xz321/full/max/0/default.jpg")
    assert req.identifier == "ark:/12025/654xz321"
    assert _image("a%2Fb/c/full/max/0/default.jpg").identifier == "a/b/c"
    assert _image("http://example.com/x/full/max/0/default.jpg").identifier == (
        "http://example.com/x"
    )


@pytest.mark.parametrize(
    "path", ["/id/full/max/0/default.jpg", "/id/info.json", "/id", "/", "//info.json"]
)
def test_leading_slash_is_an_empty_identifier(path: str) -> None:
    err = _error(path)
    assert (err.status, err.parameter) == (400, "identifier")


def test_encoded_slash_stays_in_identifier() -> None:
    # The IIIF validator's id_error_escapedslash: identifier "a/b" must reach the lookup (404).
    assert _image("a%2Fb/full/max/0/default.jpg").identifier == "a/b"
    assert _image("a%252Fb/full/max/0/default.jpg").identifier == "a%2Fb"


def test_percent_encoded_parameters_are_decoded() -> None:
    req = _image("id/%66ull/max/%2190/default%2Ejpg")
    assert (req.region, req.rotation, req.mirror, req.format) == (FullRegion(), 90.0, True, "jpg")


@pytest.mark.parametrize(
    "path",
    [
        "id/full",
        "id/full/max",
        "id/full/max/0",
        "id/",
        "id/info.json/",
    ],
)
def test_malformed_paths_are_400(path: str) -> None:
    assert _error(path).status == 400


@pytest.mark.parametrize(
    "identifier",
    [
        "",
        "%00",
        "a%00b",
        "a\x00b",
        "a%0Ab",
        "a%7Fb",
        "a%C2%85b",  # NEL, a C1 control
        "%FF",  # not UTF-8
        "%C3",  # truncated UTF-8
        "%ED%A0%80",  # encoded surrogate
        "\ud800",
        "x" * 1025,
        "%41" * 1025,
    ],
)
def test_bad_identifiers(identifier: str) -> None:
    for path in (identifier, f"{identifier}/info.json", f"{identifier}/full/max/0/default.jpg"):
        err = _error(path)
        assert (err.status, err.parameter) == (400, "identifier"), path


def test_identifier_length_limit_is_inclusive() -> None:
    assert _image("x" * 1024 + "/full/max/0/default.jpg").identifier == "x" * 1024
    assert parse_path(V3, "%C3%A9" * 1024) == BaseRequest("\u00e9" * 1024, V3)


def test_huge_path_is_400() -> None:
    assert _error("x" * 100_000 + "/full/max/0/default.jpg").status == 400


def test_unicode_identifier() -> None:
    assert _image("%E6%97%A5%E6%9C%AC/full/max/0/default.jpg").identifier == "\u65e5\u672c"
    assert _image("\u65e5\u672c/full/max/0/default.jpg").identifier == "\u65e5\u672c"


@pytest.mark.parametrize("version", [V2, V3])
def test_huge_numbers_name_their_parameter(version: ApiVersion) -> None:
    size = "max" if version == V3 else "full"
    huge = "9" * 5000
    for path, parameter in [
        (f"id/0,0,{huge},1/{size}/0/default.jpg", "region"),
        (f"id/full/{huge},/0/default.jpg", "size"),
        (f"id/full/pct:{huge}/0/default.jpg", "size"),
        (f"id/full/{size}/{huge}/default.jpg", "rotation"),
        (f"id/full/{size}/{huge}.5/default.jpg", "rotation"),
    ]:
        err = _error(path, version)
        assert (err.status, err.parameter) == (400, parameter)


def test_error_text_names_parameter() -> None:
    err = _error("id/full/max/abc/default.jpg")
    assert str(err).startswith("rotation: ")
    assert err.message in str(err)


# --- Property tests. -------------------------------------------------------------------------
_identifiers = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40
)
# Decimals as the spec writes them: finitely many digits, no exponent.
_decimals = st.builds(lambda n, k: n / 10**k, st.integers(0, 10**9), st.integers(0, 6))
_positive_decimals = _decimals.filter(lambda v: v > 0)
_ints = st.integers(0, 2**31 - 1)
_positive_ints = st.integers(1, 2**31 - 1)

_regions: st.SearchStrategy[Region] = st.one_of(
    st.just(FullRegion()),
    st.just(SquareRegion()),
    st.builds(PixelRegion, _ints, _ints, _positive_ints, _positive_ints),
    st.builds(PercentRegion, _decimals, _decimals, _positive_decimals, _positive_decimals),
)


def _dimension_sizes(upscale: bool) -> st.SearchStrategy[Size]:
    return st.one_of(
        st.builds(lambda w: Size("w", w, upscale=upscale), _positive_ints),
        st.builds(lambda h: Size("h", None, h, upscale=upscale), _positive_ints),
        st.builds(lambda w, h: Size("wh", w, h, upscale=upscale), _positive_ints, _positive_ints),
        st.builds(
            lambda w, h: Size("confined", w, h, upscale=upscale), _positive_ints, _positive_ints
        ),
    )


_sizes_v3: st.SearchStrategy[Size] = st.one_of(
    st.sampled_from([Size("max"), Size("max", upscale=True)]),
    st.builds(lambda p: Size("pct", percent=p), _positive_decimals.filter(lambda p: p <= 100)),
    st.builds(lambda p: Size("pct", percent=p, upscale=True), _positive_decimals),
    _dimension_sizes(False),
    _dimension_sizes(True),
)
_sizes_v2: st.SearchStrategy[Size] = st.one_of(
    st.sampled_from([Size("max"), Size("max", full=True)]),
    st.builds(lambda p: Size("pct", percent=p), _positive_decimals),
    _dimension_sizes(False),
)


_rotations = st.integers(0, 359).map(float) | st.integers(0, 359_999_999).map(lambda n: n / 10**6)
_versions = st.sampled_from([V2, V3])
_qualities = st.sampled_from(QUALITIES)
_formats = st.sampled_from(sorted(SUPPORTED_FORMATS))


@st.composite
def image_requests(draw: st.DrawFn) -> ImageRequest:
    """Any request parse_path can produce."""
    version = draw(_versions)
    return ImageRequest(
        identifier=draw(_identifiers),
        region=draw(_regions),
        size=draw(_sizes_v3 if version == V3 else _sizes_v2),
        rotation=draw(_rotations),
        mirror=draw(st.booleans()),
        quality=draw(_qualities),
        format=draw(_formats),
        version=version,
    )


@FAST
@given(image_requests())
def test_serialize_round_trips(req: ImageRequest) -> None:
    assert parse_path(req.version, serialize(req)) == req


_TOKENS = [
    "",
    "/",
    "%",
    "%2F",
    "%00",
    "\x00",
    "%FF",
    "%C3",
    "\ud800",
    "\u00e9",
    "\u0661",
    "info.json",
    "full",
    "square",
    "max",
    "^max",
    "^",
    "!",
    "pct:",
    ",",
    ".",
    "0",
    "1",
    "360",
    "1e3",
    "nan",
    "inf",
    "-1",
    "+1",
    " 1",
    "9" * 40,
    "9" * 12,
    "default",
    "default.jpg",
    "gray.pdf",
    ".jpg",
    "x" * 300,
]
_segments = st.lists(st.sampled_from(_TOKENS), max_size=4).map("".join)
_structured_paths = st.lists(_segments, min_size=1, max_size=8).map("/".join)


def _outcome(
    version: ApiVersion, path: str
) -> ImageRequest | InfoRequest | BaseRequest | IIIFError:
    try:
        return parse_path(version, path)
    except IIIFError as err:
        return err


_PARAMETERS = (None, "identifier", "region", "size", "rotation", "quality", "format")


def _parses_or_iiif_error(version: ApiVersion, path: str) -> None:
    # Anything other than IIIFError propagates and fails the test.
    outcome = _outcome(version, path)
    if isinstance(outcome, IIIFError):
        assert outcome.status in (400, 501)
        assert outcome.parameter in _PARAMETERS
        assert str(outcome)
    else:
        assert isinstance(outcome, ImageRequest | InfoRequest | BaseRequest)


@FAST
@given(st.sampled_from([V2, V3]), st.text())
def test_any_text_parses_or_raises_iiif_error(version: ApiVersion, path: str) -> None:
    _parses_or_iiif_error(version, path)


@FAST
@given(st.sampled_from([V2, V3]), _structured_paths)
def test_iiif_like_garbage_parses_or_raises_iiif_error(version: ApiVersion, path: str) -> None:
    _parses_or_iiif_error(version, path)


@FAST
@given(st.sampled_from([V2, V3]), _identifiers, st.lists(_segments, min_size=4, max_size=4))
def test_garbage_parameters_never_escape(
    version: ApiVersion, identifier: str, params: list[str]
) -> None:
    _parses_or_iiif_error(version, "/".join([identifier, *params]))
