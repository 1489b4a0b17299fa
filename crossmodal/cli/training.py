"""CLI command that trains models: finetune (contrastive fine-tuning, or training from scratch).

Arguments in, `crossmodal.model.training.finetune` called, a model folder and a loss summary out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from crossmodal.cli.evaluate import (
    _device_option,
    _dump,
    _model_option,
    _progress,
    eval_command,
)
from crossmodal.cli.options import err, friendly_errors, out
from crossmodal.model.specs import default_model_spec


@click.command("finetune")
@click.argument("captions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model folder to write (open_clip format); use it later as --model OUTPUT.",
)
@click.option(
    "--images",
    "image_root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the captions file's image paths are relative to (default: its folder).",
)
@_model_option
@click.option(
    "--from-scratch",
    "scratch_config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from random weights of this architecture config JSON "
    "(an open_clip model_cfg, or a file with a model_cfg key) instead of --model.",
)
@click.option("--epochs", default=10, show_default=True)
@click.option("--steps", "max_steps", type=int, default=None, help="Stop after this many steps.")
@click.option("--batch-size", default=128, show_default=True, help="Pairs per step.")
@click.option("--lr", default=5e-4, show_default=True, help="Peak learning rate.")
@click.option("--min-lr", default=0.0, show_default=True, help="Learning rate at the end.")
@click.option("--warmup", "warmup_steps", default=100, show_default=True, help="Warmup steps.")
@click.option("--weight-decay", default=0.1, show_default=True)
@click.option("--freeze-image", is_flag=True, help="Keep the image tower fixed.")
@click.option("--freeze-text", is_flag=True, help="Keep the text tower fixed.")
@click.option(
    "--freeze-layers",
    default=0,
    show_default=True,
    help="Keep the embeddings and first N blocks of each trained tower fixed.",
)
@click.option(
    "--pairs",
    type=click.Choice(["caption", "label"]),
    default="caption",
    show_default=True,
    help="What the loss counts as a true pair: an image and its own captions (and captions "
    "with the same text), or also every caption of every image with the same label, as "
    "`eval --match label` scores (needs a label column).",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--save-every",
    default=0,
    show_default=True,
    help="Also checkpoint to OUTPUT/epoch-K every K epochs.",
)
@click.option("--half", "half_weights", is_flag=True, help="Write float16 weights (half size).")
@click.option(
    "--cpu-bf16",
    is_flag=True,
    help="Train in bfloat16 autocast on the CPU: about 1.9x faster per step on CPUs with "
    "AVX-512 BF16 or AMX; the weights stay float32.",
)
@_device_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly_errors
def finetune_command(
    captions: Path,
    output: Path,
    image_root: Path | None,
    model_spec: str | None,
    scratch_config: Path | None,
    epochs: int,
    max_steps: int | None,
    batch_size: int,
    lr: float,
    min_lr: float,
    warmup_steps: int,
    weight_decay: float,
    freeze_image: bool,
    freeze_text: bool,
    freeze_layers: int,
    pairs: str,
    seed: int,
    save_every: int,
    half_weights: bool,
    cpu_bf16: bool,
    device: str,
    as_json: bool,
) -> None:
    """Fine-tune a model with CLIP's contrastive loss on CAPTIONS (CSV or JSONL), in fp32."""
    from crossmodal.media.captions import read_captions
    from crossmodal.model.encoder import (
        EncoderConfig,
        create_encoder_from_config,
        load_encoder,
        model_config_of,
        resolve_device,
    )
    from crossmodal.model.training import FinetuneConfig, TrainStep, finetune, same_label_fits

    if model_spec and scratch_config:
        raise click.UsageError("give --model or --from-scratch, not both")
    dataset = read_captions(captions, image_root)
    config = FinetuneConfig(
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        min_lr=min_lr,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        freeze_image=freeze_image,
        freeze_text=freeze_text,
        freeze_layers=freeze_layers,
        seed=seed,
        save_every=save_every,
        half_weights=half_weights,
        cpu_bf16=cpu_bf16,
    )
    with err.status("loading model ..."):
        if scratch_config is not None:
            model_cfg = _read_architecture(scratch_config)
            encoder = create_encoder_from_config(
                model_cfg, seed=seed, device=resolve_device(device)
            )
        else:
            spec = model_spec or default_model_spec()
            model_cfg = model_config_of(spec)
            encoder = load_encoder(spec, EncoderConfig(device=device, precision="fp32"))
    with _progress() as progress:
        task = progress.add_task("fine-tuning", total=None, info="")

        def on_step(step: TrainStep) -> None:
            progress.update(
                task,
                total=step.total_steps,
                completed=step.step,
                info=f"epoch {step.epoch} loss {step.loss:.4f} lr {step.lr:.2e}",
            )

        fits = same_label_fits(dataset) if pairs == "label" else None
        result = finetune(encoder, dataset, output, model_cfg, config, on_step=on_step, fits=fits)
    if as_json:
        _dump(result.to_dict(), None)
        return
    out.print(
        f"trained {result.steps} steps in {result.seconds:.1f}s: loss {result.losses[0]:.4f}"
        f" → {result.losses[-1]:.4f} ({result.trainable_params:,} of "
        f"{result.total_params:,} parameters trained)"
    )
    out.print(f"saved to {output}; use it with --model {output}")


def _read_architecture(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--from-scratch") from exc
    config = data.get("model_cfg", data) if isinstance(data, dict) else None
    if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
        raise click.BadParameter(
            f"{path} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)",
            param_hint="--from-scratch",
        )
    return config


COMMANDS = (finetune_command,)


@click.group()
def group() -> None:
    """Local group for trying eval and finetune; the main CLI registers each module's COMMANDS."""


for _command in (eval_command, finetune_command):
    group.add_command(_command)
