from pathlib import Path

import pytest

from crossmodal.errors import ModelSpecError
from crossmodal.model.specs import SpecKind, default_model_spec, parse_model_spec


@pytest.mark.parametrize(
    ("spec", "kind", "arch", "pretrained"),
    [
        ("ViT-B-32:laion2b_s34b_b79k", SpecKind.PRETRAINED, "ViT-B-32", "laion2b_s34b_b79k"),
        ("RN50:openai", SpecKind.PRETRAINED, "RN50", "openai"),
        ("  ViT-L-14:openai ", SpecKind.PRETRAINED, "ViT-L-14", "openai"),
        ("hf-hub:timm/ViT-B-16-SigLIP", SpecKind.HF_HUB, None, None),
    ],
)
def test_parse_named_models(spec, kind, arch, pretrained):
    parsed = parse_model_spec(spec)
    assert (parsed.kind, parsed.arch, parsed.pretrained) == (kind, arch, pretrained)


def test_hub_spec_is_passed_to_open_clip_unchanged():
    parsed = parse_model_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert parsed.open_clip_name == "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert parsed.open_clip_pretrained is None


def test_parse_local_directory_with_and_without_prefix(tmp_path: Path):
    (tmp_path / "open_clip_config.json").write_text("{}")
    for spec in (str(tmp_path), f"local-dir:{tmp_path}"):
        parsed = parse_model_spec(spec)
        assert parsed.kind is SpecKind.LOCAL_DIR
        assert parsed.open_clip_name == f"local-dir:{tmp_path}"
        assert parsed.text == str(tmp_path)


def test_parse_architecture_with_local_checkpoint(tmp_path: Path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    parsed = parse_model_spec(f"ViT-B-32:{weights}")
    assert parsed.kind is SpecKind.CHECKPOINT
    assert (parsed.open_clip_name, parsed.open_clip_pretrained) == ("ViT-B-32", str(weights))


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "empty"),
        ("ViT-B-32", "names no weights"),
        ("hf-hub:justone", "hf-hub:ORG/REPO"),
        (":openai", "non-empty"),
        ("ViT-B-32:", "non-empty"),
        ("ViT-B-32:/no/such/file.pt", "does not exist"),
        ("./no/such/dir", "does not exist"),
    ],
)
def test_bad_specs_explain_the_valid_forms(spec, reason):
    with pytest.raises(ModelSpecError) as info:
        parse_model_spec(spec)
    assert reason in str(info.value)
    assert "ARCH:PRETRAINED" in str(info.value)


def test_directory_without_config_is_refused(tmp_path: Path):
    with pytest.raises(ModelSpecError, match="no open_clip_config.json"):
        parse_model_spec(str(tmp_path))


def test_default_model_honours_environment(monkeypatch):
    monkeypatch.delenv("CROSSMODAL_MODEL", raising=False)
    assert default_model_spec() == "ViT-B-32:laion2b_s34b_b79k"
    monkeypatch.setenv("CROSSMODAL_MODEL", "RN50:openai")
    assert default_model_spec() == "RN50:openai"
