"""Fine-tuning a tiny open_clip model from scratch: loss goes down, runs repeat, freezing holds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from crossmodal.errors import TrainingError
from crossmodal.evaluate.synthetic import all_scenes, write_captioned_set
from crossmodal.media.captions import CaptionedSet, read_captions
from crossmodal.model.encoder import EncoderConfig, create_encoder_from_config, load_encoder
from crossmodal.model.training import (
    FinetuneConfig,
    FinetuneResult,
    clip_loss,
    finetune,
    lr_at,
    same_label_fits,
)

torch = pytest.importorskip("torch")

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> CaptionedSet:
    folder = tmp_path_factory.mktemp("shapes")
    scenes = [s for s in all_scenes() if s.background == "white" and s.position == "center"]
    write_captioned_set(folder, scenes, per_scene=1, seed=0, size=32)
    return read_captions(folder / "captions.csv")


def dataset_loss(encoder, dataset: CaptionedSet) -> float:
    image_features = torch.from_numpy(
        encoder.encode_images(
            [__import__("PIL.Image").Image.open(i.path).convert("RGB") for i in dataset.items]
        )
    )
    text_features = torch.from_numpy(encoder.encode_texts([i.captions[0] for i in dataset.items]))
    return float(clip_loss(image_features, text_features, torch.tensor(encoder.logit_scale)))


def train(shapes: CaptionedSet, out: Path, **options) -> tuple[FinetuneResult, object]:
    encoder = create_encoder_from_config(TINY, seed=0)
    config = FinetuneConfig(
        **{"epochs": 0, "max_steps": 8, "batch_size": 12, "lr": 3e-3, "warmup_steps": 2, **options}
    )
    return finetune(encoder, shapes, out, TINY, config), encoder


def test_a_few_steps_lower_the_loss(shapes: CaptionedSet, tmp_path: Path) -> None:
    before = dataset_loss(create_encoder_from_config(TINY, seed=0), shapes)
    result, encoder = train(shapes, tmp_path / "model")
    assert result.steps == 8 and len(result.losses) == 8
    assert dataset_loss(encoder, shapes) < before - 0.1


def test_training_is_deterministic_given_the_seed(shapes: CaptionedSet, tmp_path: Path) -> None:
    first, _ = train(shapes, tmp_path / "one", max_steps=3)
    second, _ = train(shapes, tmp_path / "two", max_steps=3)
    assert first.losses == second.losses
    assert (tmp_path / "one" / "open_clip_model.safetensors").read_bytes() == (
        tmp_path / "two" / "open_clip_model.safetensors"
    ).read_bytes()


def test_saved_model_loads_back_with_the_model_option(shapes: CaptionedSet, tmp_path: Path) -> None:
    _, trained = train(shapes, tmp_path / "model", max_steps=2, half_weights=True)
    loaded = load_encoder(str(tmp_path / "model"), EncoderConfig(device="cpu", precision="fp32"))
    texts = ["a red circle in the center on a white background"]
    assert loaded.dim == 16
    assert abs(loaded.encode_texts(texts) - trained.encode_texts(texts)).max() < 1e-2
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model" / "open_clip_model.safetensors"), "pt") as fh:
        assert fh.get_tensor("text_projection").dtype == torch.float16


def test_freezing_keeps_the_frozen_weights(shapes: CaptionedSet, tmp_path: Path) -> None:
    initial = create_encoder_from_config(TINY, seed=0).model.state_dict()
    _, encoder = train(shapes, tmp_path / "model", max_steps=2, freeze_image=True, freeze_layers=1)
    after = encoder.model.state_dict()
    same = {name for name in initial if torch.equal(initial[name], after[name])}
    assert {n for n in initial if n.startswith("visual.")} <= same
    assert "token_embedding.weight" in same
    assert "transformer.resblocks.0.attn.in_proj_weight" in same
    assert "transformer.resblocks.1.attn.in_proj_weight" not in same


def test_freezing_both_towers_is_refused(shapes: CaptionedSet, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="nothing to train"):
        train(shapes, tmp_path / "model", freeze_image=True, freeze_text=True)


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    config = FinetuneConfig(lr=1.0, min_lr=0.1, warmup_steps=4)
    assert [lr_at(s, 12, config) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(8, 12, config) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))
    assert lr_at(12, 12, config) == pytest.approx(0.1)


def test_the_trained_object_takes_the_saved_models_identity(
    shapes: CaptionedSet, tmp_path: Path
) -> None:
    before = create_encoder_from_config(TINY, seed=0).identity
    _, trained = train(shapes, tmp_path / "model", max_steps=2)
    loaded = load_encoder(str(tmp_path / "model"), EncoderConfig(device="cpu", precision="fp32"))
    assert trained.identity == loaded.identity
    assert not trained.identity.compatible_with(before)  # a table of the old model refuses it


def test_bf16_training_on_the_cpu_learns_and_saves_float32_weights(
    shapes: CaptionedSet, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    before = dataset_loss(create_encoder_from_config(TINY, seed=0), shapes)
    result, encoder = train(shapes, tmp_path / "model", cpu_bf16=True)
    assert dataset_loss(encoder, shapes) < before - 0.1
    again, _ = train(shapes, tmp_path / "again", cpu_bf16=True)
    assert result.losses == again.losses  # still deterministic given the seed
    weights = load_file(str(tmp_path / "model" / "open_clip_model.safetensors"))
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}
    assert all(tensor.is_contiguous() for tensor in weights.values())


def test_captions_that_fit_other_images_count_as_their_pairs() -> None:
    """Image 1's caption also describes image 0: with `fits` saying so, the loss no longer
    pushes image 0 away from it. Fitting both ways is what sharing a caption group does; one
    way, the targets of image 0 and of caption 1 split in two, as computed by hand."""
    images = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.9, 0.3], [-1.0, 0.5]]))
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.8, 0.4], [-0.9, 0.6]]))
    scale = torch.tensor(10.0)
    plain = clip_loss(images, texts, scale)
    none_fit = torch.zeros(3, 3, dtype=torch.bool)
    assert clip_loss(images, texts, scale, fits=none_fit) == pytest.approx(float(plain))
    both_ways = none_fit.clone()
    both_ways[0, 1] = both_ways[1, 0] = True
    grouped = clip_loss(images, texts, scale, groups=torch.tensor([0, 0, 1]))
    assert clip_loss(images, texts, scale, fits=both_ways) == pytest.approx(float(grouped))
    one_way = none_fit.clone()
    one_way[0, 1] = True  # caption 1 fits image 0, caption 0 does not fit image 1
    loss = clip_loss(images, texts, scale, fits=one_way)
    # by hand: image 0's target is half caption 0, half caption 1; caption 1's target is half
    # image 0, half image 1; every other row keeps its one pair
    logits = scale * images @ texts.T
    log_i, log_t = logits.log_softmax(1), logits.T.log_softmax(1)
    by_hand = (
        -(
            (log_i[0, 0] + log_i[0, 1]) / 2
            + log_i[1, 1]
            + log_i[2, 2]
            + log_t[0, 0]
            + (log_t[1, 0] + log_t[1, 1]) / 2
            + log_t[2, 2]
        )
        / 6
    )
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)


def test_training_with_fits_needs_labels_and_uses_them(tmp_path: Path) -> None:
    from crossmodal.evaluate.shape_captions import caption_fits

    scenes = [s for s in all_scenes() if s.background == "white"][:12]
    write_captioned_set(tmp_path, scenes, per_scene=1, seed=0, size=32, partial_captions=2)
    partial = read_captions(tmp_path / "captions.csv")
    config = FinetuneConfig(epochs=0, max_steps=3, batch_size=12, lr=3e-3, warmup_steps=1)
    unlabelled = CaptionedSet(
        partial.source, tuple(type(i)(i.path, i.captions) for i in partial.items)
    )
    with pytest.raises(TrainingError, match="needs a label for every image"):
        finetune(
            create_encoder_from_config(TINY, seed=0),
            unlabelled,
            tmp_path / "none",
            TINY,
            config,
            fits=caption_fits,
        )
    asked: list[tuple[str, str]] = []

    def fits(caption: str, label: str) -> bool:
        asked.append((caption, label))
        return caption_fits(caption, label)

    plain = finetune(
        create_encoder_from_config(TINY, seed=0), partial, tmp_path / "p", TINY, config
    )
    fitted = finetune(
        create_encoder_from_config(TINY, seed=0), partial, tmp_path / "f", TINY, config, fits=fits
    )
    labels = {item.label for item in partial.items}
    captions = {c for item in partial.items for c in item.captions}
    assert len(asked) == len(labels) * len(captions)  # asked once per label and caption
    # the same seed; the first batch's partial captions ("a shape on the left") now count as
    # pairs of every image they fit, so its loss is not the one CLIP's targets give
    assert fitted.losses[0] != pytest.approx(plain.losses[0])


def test_fits_asked_per_batch_trains_exactly_as_the_table_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set too large to tabulate `fits` over (a label per image) asks it batch by batch:
    the same pairs, so the same losses, step for step."""
    import crossmodal.model.training as training
    from crossmodal.evaluate.shape_captions import caption_fits

    scenes = [s for s in all_scenes() if s.background == "white"][:12]
    write_captioned_set(tmp_path, scenes, per_scene=1, seed=0, size=32, partial_captions=2)
    partial = read_captions(tmp_path / "captions.csv")
    config = FinetuneConfig(epochs=0, max_steps=3, batch_size=12, lr=3e-3, warmup_steps=1)

    def run(out: str) -> tuple[float, ...]:
        encoder = create_encoder_from_config(TINY, seed=0)
        return finetune(encoder, partial, tmp_path / out, TINY, config, fits=caption_fits).losses

    tabulated = run("table")
    monkeypatch.setattr(training, "TABLE_CELLS", 0)
    assert run("per-batch") == tabulated


def test_same_label_fits_pairs_a_caption_with_every_image_of_its_label(tmp_path: Path) -> None:
    from crossmodal.media.captions import CaptionedImage

    dataset = CaptionedSet(
        tmp_path / "set.csv",
        (
            CaptionedImage(tmp_path / "a.png", ("a dog on a beach",), "dog"),
            CaptionedImage(tmp_path / "b.png", ("a sleeping dog", "a dog"), "dog"),
            CaptionedImage(tmp_path / "c.png", ("a cat", "a dog"), "cat"),
        ),
    )
    fits = same_label_fits(dataset)
    assert fits("a dog on a beach", "dog") and fits("a sleeping dog", "dog")
    assert not fits("a dog on a beach", "cat") and not fits("a cat", "dog")
    assert fits("a dog", "dog") and fits("a dog", "cat")  # written for images of both labels
    assert not fits("a caption nobody wrote", "dog")
