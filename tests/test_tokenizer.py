"""The torch-free tokenizer gives open_clip's tokens, text for text."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossmodal.model.tokenizer import ClipTokenizer

open_clip = pytest.importorskip("open_clip")

TEXTS = [
    "a red circle",
    "A Photo of a DOG on the beach.",
    "an orange star in the center on a gray background",
    "  spaces\tand\nnewlines  ",
    "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve co\u00f6perate",
    "\u6771\u4eac\u30bf\u30ef\u30fc at night \U0001f303",
    "fish &amp; chips &lt;3 it's we're they've I'm you'll he'd",
    "1234567890 3.14 #hashtag @someone http://example.com/a?b=c",
    "mojibake: \u00e2\u20ac\u2122 and \u00c3\u00a9",
    "",
    "word " * 100,  # longer than any context: truncated, ending in end-of-text
]


@pytest.fixture(scope="module")
def pair() -> tuple[ClipTokenizer, object]:
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    return ClipTokenizer(default_bpe(), 77), SimpleTokenizer(context_length=77)


@pytest.mark.parametrize("text", TEXTS)
def test_same_tokens_as_open_clip(pair, text: str) -> None:
    ours, theirs = pair
    np.testing.assert_array_equal(ours([text]), theirs([text]).numpy())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_same_tokens_for_any_text(pair, text: str) -> None:
    ours, theirs = pair
    np.testing.assert_array_equal(ours([text]), theirs([text]).numpy())


PRINTABLE_ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@settings(max_examples=300, deadline=None)
@given(PRINTABLE_ASCII)
def test_printable_ascii_without_entities_needs_no_ftfy(pair, text: str) -> None:
    import ftfy

    if "&" not in text:  # the texts the tokenizer cleans without ftfy
        assert ftfy.fix_text(text) == text
    ours, theirs = pair
    np.testing.assert_array_equal(ours([text]), theirs([text]).numpy())


def test_a_short_context_truncates_like_open_clip() -> None:
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    texts = ["a red circle on the left on a white background and much more besides"]
    ours = ClipTokenizer(default_bpe(), 16)(texts)
    assert ours.shape == (1, 16) and ours[0, -1] == ours.max()  # the last token is end-of-text
    np.testing.assert_array_equal(ours, SimpleTokenizer(context_length=16)(texts).numpy())
