"""The real open_clip path, with a tiny random model written as a local config (offline)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG, make_image
from PIL import Image

from crossmodal.errors import ModelLoadError
from crossmodal.media.images import decode_image
from crossmodal.model.encoder import EncoderConfig, load_encoder, resolve_precision


@pytest.fixture(scope="module")
def clip(tiny_model_dir):
    return load_encoder(str(tiny_model_dir), EncoderConfig(device="cpu", precision="fp32"))


def _pictures(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(5):
        path = tmp_path / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + i * 7, 64, 3), np.uint8)).save(path)
        paths.append(path)
    return paths


def test_embeddings_match_open_clip_itself(clip, tiny_model_dir, tmp_path):
    import open_clip
    import torch

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_model_dir}")
    model.eval()
    paths = _pictures(tmp_path)
    texts = ["a photo of a dog", "red", "une phrase en français"]
    with torch.no_grad():
        ref_img = model.encode_image(torch.stack([preprocess(Image.open(p)) for p in paths]))
        ref_txt = model.encode_text(tokenizer(texts))
    ref_img = torch.nn.functional.normalize(ref_img, dim=-1).numpy()
    ref_txt = torch.nn.functional.normalize(ref_txt, dim=-1).numpy()
    ours_img = clip.encode_images([decode_image(p).image for p in paths])
    ours_txt = clip.encode_texts(texts)
    assert np.min(np.sum(ours_img * ref_img, axis=1)) >= 0.9999
    assert np.min(np.sum(ours_txt * ref_txt, axis=1)) >= 0.9999


def test_outputs_are_normalised_float32_of_model_dimension(clip):
    vectors = clip.encode_images([Image.new("RGB", (30, 50), (9, 99, 199))] * 3)
    assert vectors.dtype == np.float32 and vectors.shape == (3, TINY_CONFIG["embed_dim"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    texts = clip.encode_texts(["a", "b"])
    assert texts.shape == (2, 32) and np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_results(tiny_model_dir, tmp_path):
    images = [decode_image(p).image for p in _pictures(tmp_path)]
    one = load_encoder(str(tiny_model_dir), EncoderConfig("cpu", "fp32", batch_size=1))
    many = load_encoder(str(tiny_model_dir), EncoderConfig("cpu", "fp32", batch_size=4))
    assert np.allclose(one.encode_images(images), many.encode_images(images), atol=1e-5)


def test_identity_records_model_dimension_and_preprocessing(clip, tiny_model_dir):
    identity = clip.identity
    assert identity.spec == str(tiny_model_dir)
    assert identity.dim == 32
    assert identity.fingerprint.startswith("local@sha256:")
    assert identity.preprocess.startswith("size=(32, 32) resize=shortest interp=bicubic")
    assert clip.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)


def test_different_weights_have_different_fingerprints(tiny_model_dir, tmp_path, clip):
    from crossmodal.model.encoder import create_model_from_config, save_model_dir

    other = save_model_dir(
        create_model_from_config(TINY_CONFIG, seed=1), TINY_CONFIG, tmp_path / "other"
    )
    assert load_encoder(str(other), EncoderConfig("cpu")).identity.fingerprint != (
        clip.identity.fingerprint
    )


def test_bf16_on_cpu_stays_close_to_fp32(tiny_model_dir, clip, tmp_path):
    images = [decode_image(p).image for p in _pictures(tmp_path)]
    bf16 = load_encoder(str(tiny_model_dir), EncoderConfig("cpu", "bf16"))
    cosine = np.sum(bf16.encode_images(images) * clip.encode_images(images), axis=1)
    assert cosine.min() > 0.99


def test_bad_device_and_precision_are_refused():
    with pytest.raises(ModelLoadError, match="fp16 is not supported on CPU"):
        resolve_precision("cpu", "fp16")
    with pytest.raises(ModelLoadError, match="unknown precision"):
        resolve_precision("cpu", "fp8")
    assert resolve_precision("cuda", "auto") == "fp16"


def test_unloadable_pretrained_model_explains_offline_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="offline") as info:
        load_encoder("ViT-B-32:no_such_tag_xyz", EncoderConfig("cpu"))
    assert "--model DIR" in str(info.value)


def test_pickled_checkpoint_is_never_executed(tmp_path):
    """A .pt checkpoint whose pickle runs code must be refused by weights-only loading."""
    marker = tmp_path / "pwned"
    payload = tmp_path / "evil.pt"
    script = (
        "import torch, os\n"
        "class Evil:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'state_dict': Evil()}}, {str(payload)!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with pytest.raises(ModelLoadError):
        load_encoder(f"ViT-B-32:{payload}", EncoderConfig("cpu"))
    assert not marker.exists()


def test_import_crossmodal_does_not_import_torch():
    code = (
        "import sys, crossmodal\n"
        "from crossmodal import Store, Searcher, index_folder, parse_model_spec\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'open_clip' not in sys.modules, 'open_clip imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_real_encoder_indexes_and_finds_an_identical_image(clip, tmp_path):
    from crossmodal.indexing import index_folder
    from crossmodal.search import Searcher, SearchOptions
    from crossmodal.store import Store

    for i, colour in enumerate(["red", "green", "blue", "yellow"]):
        make_image(tmp_path / "photos" / f"{i}-{colour}.png", colour, size=(40 + i, 40))
    store = Store.open(tmp_path / "db", create=True)
    report = index_folder(tmp_path / "photos", store, clip)
    assert report.new == 4
    hits = Searcher(store, clip).by_image(tmp_path / "photos" / "2-blue.png", SearchOptions(k=1))
    assert hits[0].row.name == "2-blue.png" and hits[0].score == pytest.approx(1.0, abs=1e-4)
