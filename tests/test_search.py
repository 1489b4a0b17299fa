import numpy as np
import pytest
from conftest import COLOURS, make_image
from PIL import Image

from crossmodal.errors import CrossmodalError, ModelMismatchError
from crossmodal.indexing import index_folder
from crossmodal.search import Searcher, SearchOptions, zero_shot
from crossmodal.search.labels import add_texts, read_texts
from crossmodal.store import Store
from crossmodal.store.filters import Filters


@pytest.fixture
def searcher(photos, tmp_path, encoder):
    store = Store.open(tmp_path / "db", create=True)
    index_folder(photos, store, encoder)
    return Searcher(store, encoder)


def names(hits):
    return [h.row.name for h in hits]


def test_text_search_ranks_the_matching_photo_first(searcher):
    hits = searcher.by_text("a cyan sky", SearchOptions(k=3))
    assert names(hits)[0] == "cyan.png"
    assert hits[0].score == pytest.approx(1.0)
    assert hits[1].score == pytest.approx(0.0)
    assert len(hits) == 3


def test_image_search_finds_the_same_colour(searcher, tmp_path):
    query = make_image(tmp_path / "q.png", "yellow", size=(10, 10))
    assert names(searcher.by_image(query, SearchOptions(k=1))) == ["yellow.jpg"]
    assert names(searcher.by_image(Image.open(query), SearchOptions(k=1))) == ["yellow.jpg"]


def test_vector_search_with_typed_and_raw_filters(searcher, encoder):
    vector = encoder.encode_texts(["red"])[0]
    assert names(searcher.by_vector(vector, SearchOptions(k=1))) == ["red.jpg"]
    pngs = SearchOptions(k=10, filters=Filters(types=("png",)))
    assert sorted(names(searcher.by_vector(vector, pngs))) == ["cyan.png", "green.png"]
    raw = SearchOptions(k=10, filters=Filters(sql="suffix = '.png'"))
    assert sorted(names(searcher.by_vector(vector, raw))) == ["cyan.png", "green.png"]


def test_every_convenience_is_the_one_search_call(searcher, encoder, photos, tmp_path):
    options = SearchOptions(k=2, offset=1, min_score=-1.0)
    text = encoder.encode_texts(["a cyan sky"])[0]
    assert names(searcher.by_text("a cyan sky", options)) == names(searcher.search(text, options))
    assert names(searcher.search("a cyan sky", options)) == names(searcher.search(text, options))
    query = make_image(tmp_path / "q.png", "yellow", size=(10, 10))
    assert names(searcher.by_image(query, options)) == names(searcher.search(query, options))


def test_more_like_this_excludes_the_photo_itself_on_every_page(searcher, photos):
    first = searcher.like(photos / "red.jpg", SearchOptions(k=2))
    second = searcher.like(str(photos / "red.jpg"), SearchOptions(k=2, offset=2))
    everything = searcher.like(photos / "red.jpg", SearchOptions(k=100))
    assert "red.jpg" not in names(everything)
    assert names(first) + names(second) == names(everything)[:4]
    assert len(everything) == 5


def test_min_score_and_offset_apply_to_the_ranking(searcher):
    everything = searcher.search("a cyan sky", SearchOptions(k=100))
    strong = searcher.search("a cyan sky", SearchOptions(k=100, min_score=0.5))
    assert names(strong) == ["cyan.png"]
    page = searcher.search("a cyan sky", SearchOptions(k=2, offset=1))
    assert names(page) == names(everything)[1:3]


@pytest.mark.parametrize(
    "options, reason",
    [
        (
            SearchOptions(filters=Filters(folder="Holidays")),
            "no indexed photo is in a folder 'Holidays'",
        ),
        (SearchOptions(filters=Filters(min_width=5000)), "no indexed photo matches min width 5000"),
        (SearchOptions(offset=500), "only 6 photo(s) match, and the page starts at hit 501"),
        (SearchOptions(min_score=0.999), "no photo scores 1.00 or more"),
    ],
)
def test_an_empty_result_says_which_condition_emptied_it(searcher, options, reason):
    assert searcher.search("a magenta thing", options) == []
    assert searcher.explain_empty(options).startswith(reason)


def test_conditions_that_only_empty_the_result_together_are_named_together(searcher, photos):
    filters = Filters(types=("png",), sql="name = 'red.jpg'")
    assert searcher.search("red", SearchOptions(filters=filters)) == []
    assert searcher.explain_empty(SearchOptions(filters=filters)) == (
        "no photo matches all of: types PNG, sql name = 'red.jpg' (each one alone matches some)"
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SearchOptions(k=0), "k must be from 1"),
        (lambda: SearchOptions(k=2**40), "k must be from 1"),
        (lambda: SearchOptions(offset=-1), "offset must be from 0"),
        (lambda: SearchOptions(offset=2**33), "offset must be from 0"),
        (lambda: SearchOptions(min_score=2.0), "min_score is a cosine similarity"),
    ],
)
def test_invalid_options_are_refused_when_made(make, message):
    with pytest.raises(CrossmodalError, match=message):
        make()


def test_wrong_vector_shape_and_empty_text_are_refused(searcher):
    with pytest.raises(CrossmodalError, match="shape"):
        searcher.by_vector(np.zeros(3, np.float32))
    with pytest.raises(CrossmodalError, match="empty"):
        searcher.by_text("   ")


def test_searching_with_another_model_is_refused(searcher):
    from conftest import ColourEncoder

    with pytest.raises(ModelMismatchError, match="--model fake-colours"):
        Searcher(searcher.store, ColourEncoder("another"))


def test_zero_shot_probabilities_follow_clip_softmax(encoder):
    labels = ["red", "green", "blue"]
    image_vector = encoder.encode_images([Image.new("RGB", (4, 4), COLOURS["red"])])[0]
    hits = zero_shot(encoder, image_vector, labels, encoder.encode_texts(labels))
    assert [h.text for h in hits] == ["red", "green", "blue"]
    expected_top = 1 / (1 + 2 * np.exp(-100.0))
    assert hits[0].probability == pytest.approx(expected_top)
    assert sum(h.probability for h in hits) == pytest.approx(1.0)


def test_labels_from_file_classify_an_image(tmp_path, encoder):
    path = tmp_path / "labels.txt"
    path.write_text("# colours\nred\n\ngreen\nblue\nred\n")
    assert read_texts(path) == ["red", "green", "blue"]
    store = Store.open(tmp_path / "db", create=True)
    assert add_texts(store, encoder, read_texts(path)) == 3
    hits = Searcher(store, encoder).classify(Image.new("RGB", (4, 4), COLOURS["blue"]))
    assert hits[0].text == "blue" and hits[0].probability > 0.99
    typed = Searcher(store, encoder).classify(
        Image.new("RGB", (4, 4), COLOURS["red"]), ["blue", "red"]
    )
    assert [h.text for h in typed] == ["red", "blue"]


def test_caption_retrieval_returns_closest_texts(tmp_path, encoder):
    store = Store.open(tmp_path / "db", create=True)
    add_texts(
        store,
        encoder,
        ["a green field", "a red car", "a blue sea", "nothing here"],
        table="captions",
    )
    image = Image.new("RGB", (4, 4), COLOURS["blue"])
    hits = Searcher(store, encoder).captions(image, "captions", k=2)
    assert hits[0].text == "a blue sea" and hits[0].score == pytest.approx(1.0)
    assert len(hits) == 2
