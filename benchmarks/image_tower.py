"""The image tower on this CPU: torch (fp32, bf16) against ONNX Runtime (fp32, int8), side by side.

    python benchmarks/image_tower.py                      # random-weight ViT-B-32, 192 photos
    python benchmarks/image_tower.py --model DIR --count 256 --rounds 3

Every engine encodes the same model-sized pixels (photo-like JPEGs decoded and resized as
`crossmodal index` does), batch 64, in rounds that alternate the engines so machine load hits
them alike. Printed per engine: images/s of the forward pass (median of rounds), the time to
get the engine ready in this process (loading the model, or opening the export), and agreement
with torch fp32: mean and minimum cosine of the vectors, and top-10 overlap of image-to-image
neighbours (each image a query over the others). The ONNX exports are made once under --work.
"onnx int8" is ONNX Runtime's dynamic quantization of the fp32 export (weights int8, activations
quantized per batch), using the CPU's VNNI instructions where it has them; "crossmodal int8" is
the export `crossmodal index` makes (`crossmodal.model.image_export`: uint8 pixels in, normalised
in the graph, a ViT's patch embedding as a matrix product), here made without its agreement bars.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from index_throughput import photo, unchecked_export  # noqa: E402  (the same photos)


def pixels(count: int, recipe: Any) -> np.ndarray:
    """`count` 1024x768 JPEGs decoded and resized as the index pipeline does them."""
    from crossmodal.media.images import decode_bytes, to_pixels

    out = []
    for seed in range(count):
        buffer = io.BytesIO()
        photo(seed, 1024, 768).save(buffer, "JPEG", quality=90)
        decoded = decode_bytes(buffer.getvalue(), f"{seed}.jpg", min_side=recipe.min_side)
        out.append(to_pixels(decoded.image, recipe))
    return np.stack(out)


def random_vit(folder: Path) -> str:
    import open_clip
    import torch

    from crossmodal.model.encoder import save_model_dir

    if not (folder / "open_clip_model.safetensors").is_file():
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32")
        save_model_dir(model, open_clip.get_model_config("ViT-B-32"), folder)
    return str(folder)


def export(encoder: Any, work: Path) -> dict[str, Path]:
    """fp32 and int8 ONNX files of `encoder`'s image tower, made once."""
    import torch

    fp32, int8 = work / "image-fp32.onnx", work / "image-int8.onnx"
    if not fp32.is_file():
        from crossmodal.model.encoder import tower

        size = encoder.pixel_recipe.size
        example = torch.zeros(2, 3, *size)
        torch.backends.mha.set_fastpath_enabled(False)  # its fused kernel has no ONNX form
        with torch.no_grad():
            torch.onnx.export(
                tower(encoder.model.float().eval(), "image"),
                (example,),
                str(fp32),
                input_names=["pixels"],
                output_names=["vectors"],
                dynamic_axes={"pixels": {0: "batch"}, "vectors": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        torch.backends.mha.set_fastpath_enabled(True)
    if not int8.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return {"onnx fp32": fp32, "onnx int8": int8}


class Torch:
    def __init__(self, spec: str, precision: str) -> None:
        from crossmodal.model.encoder import EncoderConfig, load_encoder

        self.encoder = load_encoder(spec, EncoderConfig("cpu", precision, 64))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.encoder.encode_pixels(batch)


class Onnx:
    def __init__(self, path: Path, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        chw = batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        (vectors,) = self.session.run(None, {"pixels": (chw - self.mean) / self.std})
        return np.asarray(vectors, np.float32)


def own_export(reference: Any, batch: np.ndarray, work: Path) -> tuple[Any, float]:
    """crossmodal's int8 export of the model (made once under `work`, checked on none of the
    bars: this benchmark prints its agreement itself), and the seconds it took to open."""
    from crossmodal.model.image_onnx import OnnxImageEncoder

    folder = unchecked_export(reference, batch[:64], work / "exports")
    started = time.perf_counter()
    encoder = OnnxImageEncoder.open(folder, reference.identity, 64)
    return encoder.encode_pixels, time.perf_counter() - started


def neighbours(vectors: np.ndarray, k: int = 10) -> np.ndarray:
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1)[:, :k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model spec; default: random-weight ViT-B-32")
    parser.add_argument("--count", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cm-tower")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    spec = args.model or random_vit(args.work / "vit-b-32-random")

    ready: dict[str, float] = {}
    engines: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        started = time.perf_counter()
        engines[f"torch {precision}"] = Torch(spec, precision)
        ready[f"torch {precision}"] = time.perf_counter() - started
    reference = engines["torch fp32"].encoder
    recipe = reference.pixel_recipe
    batch = pixels(args.count, recipe)
    cfg = dict(reference.model.visual.preprocess_cfg)
    for name, path in export(reference, args.work).items():
        started = time.perf_counter()
        engines[name] = Onnx(path, tuple(cfg["mean"]), tuple(cfg["std"]))
        ready[name] = time.perf_counter() - started
    engines["crossmodal int8"], ready["crossmodal int8"] = own_export(reference, batch, args.work)

    rates: dict[str, list[float]] = {name: [] for name in engines}
    vectors: dict[str, np.ndarray] = {}
    for engine in engines.values():
        engine(batch[:8])  # warm-up
    for _ in range(args.rounds):
        for name, engine in engines.items():
            started = time.perf_counter()
            out = np.concatenate([engine(batch[i : i + 64]) for i in range(0, len(batch), 64)])
            rates[name].append(len(batch) / (time.perf_counter() - started))
            vectors[name] = out

    base = vectors["torch fp32"]
    base_top = neighbours(base)
    fp32_rate = statistics.median(rates["torch fp32"])
    print(f"{args.count} photos (1024x768 JPEG, model-sized {recipe.size}), batch 64, "
          f"{args.rounds} rounds; spec {spec}")  # fmt: skip
    print(f"{'engine':15} {'img/s':>7} {'vs torch fp32':>13} {'ready s':>8} "
          f"{'mean cos':>9} {'min cos':>9} {'top-10':>7}")  # fmt: skip
    for name in engines:
        cosine = (vectors[name] * base).sum(axis=1)
        top = neighbours(vectors[name])
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, base_top, strict=True)])
        rate = statistics.median(rates[name])
        print(
            f"{name:15} {rate:7.1f} {rate / fp32_rate:12.2f}x {ready[name]:8.2f} "
            f"{cosine.mean():9.6f} {cosine.min():9.6f} {overlap:7.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
