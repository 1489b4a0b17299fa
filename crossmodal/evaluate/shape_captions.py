"""Which synthetic shape pictures a caption describes: the pairs a contrastive loss should count.

"a red circle" describes every red circle, whatever its position and background, and "a shape on
the left" every picture with its shape on the left. `caption_fits` reads the attributes a
caption names in the generator's vocabulary (`crossmodal.evaluate.synthetic`) and checks them
against a picture's label; `crossmodal.model.training.finetune` takes it as `fits`.
"""

from __future__ import annotations

import functools

from crossmodal.evaluate.synthetic import BACKGROUNDS, COLOURS, POSITIONS, SHAPES

_SYNONYMS = {"grey": "gray", "centre": "center", "middle": "center"}
_FILLER = {"a", "an", "the", "of", "on", "at", "in", "photo", "picture", "drawing", "image"}
_FILLER |= {"shape", "background"}  # the words a caption says when it leaves an attribute out


def caption_fits(caption: str, label: str) -> bool:
    """Whether `caption` describes the pictures of `label` ("colour-shape-position-background",
    as `SampleImage.label` writes it): every attribute the caption names matches, the ones it
    leaves out may be anything, so a caption naming none ("a photo") fits every label. A
    caption naming a position never fits a picture with its shape drawn anywhere, wherever the
    shape landed. A caption with a word outside the generator's vocabulary ("a crimson circle")
    fits no label: `finetune` then pairs it only with its own image and identical captions."""
    attributes = label.split("-")
    if len(attributes) != 4:
        raise ValueError(
            f"label {label!r} is not colour-shape-position-background, as the shapes "
            "generator writes them (e.g. red-circle-left-white)"
        )
    named = _named_attributes(caption)
    if named is None:
        return False
    return all(attributes[index] == value for index, value in named)


@functools.lru_cache(maxsize=1 << 16)
def _named_attributes(caption: str) -> tuple[tuple[int, str], ...] | None:
    """(attribute index in a label, value) for each attribute word of `caption`, or None when
    it has a word the generator does not write."""
    words = [_SYNONYMS.get(w, w) for w in caption.lower().replace(",", " ").rstrip(".").split()]
    named = []
    for index, word in enumerate(words):
        if word in COLOURS:
            named.append((0, word))
        elif word in SHAPES:
            named.append((1, word))
        elif word in POSITIONS:
            named.append((2, word))
        elif word in BACKGROUNDS and words[index + 1 : index + 2] == ["background"]:
            named.append((3, word))
        elif word not in _FILLER:
            return None
    return tuple(named)
