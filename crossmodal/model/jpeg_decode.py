"""JPEG decoding on the encoder's device: file bytes -> model-sized uint8 pixels, without the CPU.

On CUDA, torchvision hands a batch of JPEGs to nvJPEG, then the same geometry as `to_pixels`
(upright, shorter side to the model size with Pillow's antialiased bicubic, centre crop) runs on
the GPU. That frees the indexing run from CPU decoding, which starves a GPU: see BENCHMARKS.md,
"GPU". On a CPU the same code runs with libjpeg-turbo (what the tests exercise).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from crossmodal.media.images import JpegBytes, PixelRecipe, geometry

if TYPE_CHECKING:
    import torch

# Decoded pixels held at once on the device per decode call, a bound on its memory whatever the
# batch and photo size: 512 MP of uint8 RGB is 1.5 GB (a 64-photo batch of 12 MP is two calls).
PIXEL_BUDGET = 512_000_000
# Pixels resized at once: the resize works in float32, 12 bytes a pixel (32 MP: 384 MB).
RESIZE_BUDGET = 32_000_000
# Beyond this downscale factor a box filter shrinks first (as DCT scaling does for Pillow): the
# GPU's antialiased resize needs shared memory that grows with the factor, and fails near 47.
PRESHRINK_FACTOR = 16


def decode_to_pixels(
    jpegs: Sequence[JpegBytes], recipe: PixelRecipe, device: str
) -> tuple[torch.Tensor, list[int]]:
    """Decode `jpegs` with torchvision for `device` and shape them to `recipe`: a uint8 (N, 3,
    H, W) tensor on `device` of those decoded, in order, and the indices (into `jpegs`) of those
    refused, which the caller decodes another way. Refused: what the decoder cannot decode, and
    photos whose resize failed (out of device memory, say). Never raises for one photo."""
    import torch

    height, width = recipe.size
    shaped: dict[int, torch.Tensor] = {}
    refused: list[int] = []
    for part in _parts(jpegs):
        turned: dict[int, torch.Tensor] = {}
        for index, image in zip(part, _decode(jpegs, part, device), strict=True):
            if image is None:
                refused.append(index)
            else:
                turned[index] = upright(image, jpegs[index].orientation)
        # photos of one size are resized together: one resize for a camera's whole batch
        same_size: dict[tuple[int, ...], list[int]] = {}
        for index, image in turned.items():
            same_size.setdefault(tuple(image.shape), []).append(index)
        for (_, h, w), indices in same_size.items():
            step = max(1, RESIZE_BUDGET // (h * w))
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                try:
                    pixels = shape(torch.stack([turned[i] for i in chunk]), recipe)
                except Exception:  # out of memory, a resize the device cannot do: Pillow's turn
                    refused.extend(chunk)
                    continue
                shaped.update(zip(chunk, pixels, strict=True))
        del turned
    if not shaped:
        return torch.empty((0, 3, height, width), dtype=torch.uint8, device=device), refused
    return torch.stack([shaped[i] for i in sorted(shaped)]), sorted(refused)


def decodes_jpegs(device: str) -> bool:
    """Whether torchvision can decode JPEGs on `device` here (a build without nvJPEG cannot):
    one tiny JPEG decoded there, so a run never falls back to decoding every photo serially."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    try:
        jpeg = JpegBytes(buffer.getvalue(), 1, 16, 16, None)
        pixels, refused = decode_to_pixels([jpeg], PixelRecipe((8, 8)), device)
    except Exception:  # a build without nvJPEG, a driver that refuses: decode with Pillow
        return False
    return not refused and int(pixels[0, 0, 4, 4]) > 150


def _parts(jpegs: Sequence[JpegBytes]) -> Iterator[list[int]]:
    part: list[int] = []
    pixels = 0
    for index, jpeg in enumerate(jpegs):
        if part and pixels + jpeg.pixels > PIXEL_BUDGET:
            yield part
            part, pixels = [], 0
        part.append(index)
        pixels += jpeg.pixels
    if part:
        yield part


def _decode(jpegs: Sequence[JpegBytes], part: list[int], device: str) -> list[torch.Tensor | None]:
    """The images of `part`, each (3, h, w) uint8 on `device`, or None where it was refused.

    One batched call first; nvJPEG fails a whole batch for one file it cannot decode (some
    progressive or unusual JPEGs), and then each file is tried alone.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    inputs = [torch.frombuffer(bytearray(jpegs[i].data), dtype=torch.uint8) for i in part]
    if device.startswith("cuda"):
        # nvJPEG writes on its own stream: memory freed by kernels still queued on ours (the
        # previous part's resize) could be written before they read it (pytorch/vision#9606)
        torch.cuda.current_stream(device).synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 marks its image decoders deprecated
        try:
            return list(decode_jpeg(inputs, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        images: list[torch.Tensor | None] = []
        for one in inputs:
            try:
                images.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                images.append(None)
        return images


def shape(images: torch.Tensor, recipe: PixelRecipe) -> torch.Tensor:
    """`to_pixels` on upright (N, 3, h, w) uint8 images of one size: resized and cropped to the
    recipe, by the same `geometry`."""
    plan = geometry(images.shape[-1], images.shape[-2], recipe)
    if plan.band is not None:
        left, top, right, bottom = plan.band
        images = images[..., top:bottom, left:right]
    width, height = plan.size
    if (height, width) != tuple(images.shape[-2:]):
        images = _resize(images, height, width, recipe.interpolation)
    left, top, right, bottom = plan.crop
    return images[..., top:bottom, left:right]


def _resize(images: torch.Tensor, height: int, width: int, interpolation: str) -> torch.Tensor:
    import torch

    pixels = images.float()
    factor = min(pixels.shape[-2] / height, pixels.shape[-1] / width)
    if factor > PRESHRINK_FACTOR:
        pixels = torch.nn.functional.avg_pool2d(pixels, int(factor // (PRESHRINK_FACTOR / 2)))
    # antialiased bicubic in torch uses Pillow's kernel (a = -0.5); rounding back to uint8 as
    # Pillow does keeps the arithmetic half of preprocessing the same on both paths
    resized = torch.nn.functional.interpolate(
        pixels, size=(height, width), mode=interpolation, antialias=True
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (3, h, w) image turned and mirrored as its EXIF orientation says, as Pillow's
    `ImageOps.exif_transpose` does; orientation 1 (or unknown) leaves it as it is."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1, -2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return image.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return image.transpose(-1, -2).flip(-2)
    return image
