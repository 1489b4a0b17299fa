"""The query composition syntax and its typed API, table-driven."""

import pytest

from crossmodal.search.query import Query, QuerySyntaxError, Term, is_composed, parse_query

T = Term


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("a dog on the beach", [T(1.0, text="a dog on the beach")]),
        ("black-and-white photo, no people", [T(1.0, text="black-and-white photo, no people")]),
        ("a dog's toy", [T(1.0, text="a dog's toy")]),
        ('"beach"', [T(1.0, text="beach")]),
        (
            '"beach" + 0.5*"sunset" - "people"',
            [T(1.0, text="beach"), T(0.5, text="sunset"), T(-1.0, text="people")],
        ),
        ("'dogs' - 'cats'", [T(1.0, text="dogs"), T(-1.0, text="cats")]),
        ('@me.jpg + "at night"', [T(1.0, image="me.jpg"), T(1.0, text="at night")]),
        (
            '@"my photos/a b.jpg" - 2 * "snow"',
            [T(1.0, image="my photos/a b.jpg"), T(-2.0, text="snow")],
        ),
        ('-0.3*@ugly.png + "cat"', [T(-0.3, image="ugly.png"), T(1.0, text="cat")]),
        ('"a" - -"b"', [T(1.0, text="a"), T(1.0, text="b")]),
        ('.5*"x"', [T(0.5, text="x")]),
    ],
)
def test_parse_query(text, terms):
    assert parse_query(text).terms == tuple(terms)


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ('"beach" "sunset"', 8, "join terms with + or -"),
        ('"beach" + sunset', 10, "expected a quoted text"),
        ('"beach" +', 9, "ends without a term"),
        ('"beach" + 0.5*', 14, "ends without a term"),
        ('"" + "x"', 0, "empty quoted text"),
        ('"beach" + 2*3*"x"', 12, "two weights in a row"),
    ],
)
def test_syntax_errors_point_at_the_problem(text, position, reason):
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(text)
    assert info.value.position == position
    assert reason in str(info.value)
    assert "Valid forms" in str(info.value)


def test_typed_api_builds_the_same_query_as_the_syntax():
    built = Query.text("beach") + 0.5 * Query.text("sunset") - Query.text("people")
    assert built == parse_query('"beach" + 0.5*"sunset" - "people"')
    assert built.describe() == '"beach" + 0.5*"sunset" - "people"'
    assert built.keywords == "beach sunset"
    assert (-Query.image("a.jpg")).terms == (T(-1.0, image="a.jpg"),)


def test_plain_text_is_not_composition():
    assert not is_composed("sunset over the sea - 2019")
    assert is_composed("@x.jpg")
    assert is_composed('sunset - "people"')
