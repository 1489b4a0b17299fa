import numpy as np
import pytest
from conftest import COLOURS, make_image
from PIL import Image

from crossmodal.errors import CrossmodalError, ModelMismatchError
from crossmodal.indexing import index_folder
from crossmodal.labels import add_texts, read_texts
from crossmodal.search import Searcher, captions_for, classify, classify_with_table
from crossmodal.store import Store


@pytest.fixture
def searcher(photos, tmp_path, encoder):
    store = Store.open(tmp_path / "db", create=True)
    index_folder(photos, store, encoder)
    return Searcher(store, encoder)


def names(hits):
    return [h.row.name for h in hits]


def test_text_search_ranks_the_matching_photo_first(searcher):
    hits = searcher.by_text("a cyan sky", k=3)
    assert names(hits)[0] == "cyan.png"
    assert hits[0].score == pytest.approx(1.0)
    assert hits[1].score == pytest.approx(0.0)
    assert len(hits) == 3


def test_image_search_finds_the_same_colour(searcher, tmp_path):
    query = make_image(tmp_path / "q.png", "yellow", size=(10, 10))
    assert names(searcher.by_image(query, k=1)) == ["yellow.jpg"]
    assert names(searcher.by_image(Image.open(query), k=1)) == ["yellow.jpg"]


def test_vector_search_and_where_filter(searcher, encoder):
    vector = encoder.encode_texts(["red"])[0]
    assert names(searcher.by_vector(vector, k=1)) == ["red.jpg"]
    hits = searcher.by_vector(vector, k=10, where="suffix = '.png'")
    assert sorted(names(hits)) == ["cyan.png", "green.png"]


def test_more_like_this_excludes_the_photo_itself(searcher, photos):
    hits = searcher.like_indexed(str(photos / "red.jpg"), k=2)
    assert "red.jpg" not in names(hits) and len(hits) == 2


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
    hits = classify(encoder, image_vector, labels, encoder.encode_texts(labels))
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
    image_vector = encoder.encode_images([Image.new("RGB", (4, 4), COLOURS["blue"])])[0]
    hits = classify_with_table(encoder, image_vector, store.texts("labels", encoder.identity))
    assert hits[0].text == "blue" and hits[0].probability > 0.99


def test_caption_retrieval_returns_closest_texts(tmp_path, encoder):
    store = Store.open(tmp_path / "db", create=True)
    add_texts(
        store,
        encoder,
        ["a green field", "a red car", "a blue sea", "nothing here"],
        table="captions",
    )
    image_vector = encoder.encode_images([Image.new("RGB", (4, 4), COLOURS["blue"])])[0]
    hits = captions_for(store.texts("captions", encoder.identity), image_vector, k=2)
    assert hits[0].text == "a blue sea" and hits[0].score == pytest.approx(1.0)
    assert len(hits) == 2
