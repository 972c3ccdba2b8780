"""Export a stage-1 generator to ONNX (dynamic height and width), checked against PyTorch with onnxruntime.

    python -m stylize_gan.export_onnx --checkpoint generator.safetensors --output g.onnx
The checkpoint may be ours or a published AnimeGAN generator (foreign.py). The model takes and returns
(1, 3, H, W) float RGB in [-1, 1]; `load_generator` (so --gan-checkpoint / --checkpoint) runs the file again."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common.checkpoints import atomic_write
from common.cli import check_fields, option, parse_config
from common.errors import UserInputError, cli_errors

from .foreign import ONNX_LAYOUT_KEY

MIN_OPSET = 18  # the opset torch's exporter targets; Resize with antialias / Pad with modes need >= 18
EXAMPLE_SIDE = 64  # traced example; height and width are exported as symbols
CHECK_SIZE = (45, 61)  # odd sizes for the onnxruntime-vs-PyTorch check


@dataclass
class ExportConfig:
    checkpoint: str = option(help="generator: ours (.safetensors) or a published AnimeGAN .pt / .pth")
    output: str = option(help=".onnx file to write")
    opset: int = option(MIN_OPSET, "ONNX opset version", ge=MIN_OPSET)
    overwrite: bool = option(False, "replace an existing output file")

    def __post_init__(self) -> None:
        check_fields(self)


def check_paths(checkpoint: Path, output: Path, overwrite: bool) -> None:
    """One-line errors for outputs that cannot or must not be written."""
    if output.suffix.lower() != ".onnx":
        raise UserInputError(f"{output}: the output must be an .onnx file")
    if checkpoint.suffix.lower() == ".onnx":
        raise UserInputError(f"{checkpoint}: already an ONNX model")
    if not checkpoint.exists():
        raise UserInputError(f"{checkpoint}: checkpoint not found")
    if output.is_dir():
        raise UserInputError(f"{output}: is a folder, expected an output file name")
    if not output.parent.is_dir():
        raise UserInputError(f"{output.parent}: output folder does not exist")
    if output.exists() and not overwrite:
        raise UserInputError(f"{output}: already exists (pass --overwrite to replace it)")
    if not os.access(output.parent, os.W_OK):
        raise UserInputError(f"{output.parent}: folder is not writable")


def export_generator(generator: nn.Module, output: str | os.PathLike, opset: int = MIN_OPSET) -> None:
    """torch.export with symbolic H and W -> ONNX, tagged NCHW so foreign.OnnxGenerator feeds it as exported."""
    import onnx
    generator = generator.eval().cpu()
    example = torch.rand(1, 3, EXAMPLE_SIDE, EXAMPLE_SIDE) * 2 - 1
    dims = {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    program = torch.onnx.export(generator, (example,), dynamo=True, opset_version=opset, input_names=["image"],
                                output_names=["stylized"], dynamic_shapes=({**dims},), verbose=False)

    def write(tmp: str) -> None:
        program.save(tmp)
        model = onnx.load(tmp)
        onnx.helper.set_model_props(model, {ONNX_LAYOUT_KEY: "NCHW"})
        onnx.save(model, tmp)
    atomic_write(output, write)


@torch.no_grad()
def parity(generator: nn.Module, onnx_path: str | os.PathLike, size: tuple[int, int] = CHECK_SIZE) -> float:
    """max |onnxruntime - PyTorch| on one random image of `size`."""
    import onnxruntime as ort
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float((torch.from_numpy(out) - generator.eval().cpu()(x)).abs().max())


def parse_args(argv: list[str] | None = None) -> ExportConfig:
    return parse_config(ExportConfig, argv, prog="python -m stylize_gan.export_onnx",
                        description=__doc__.split("\n")[0])


def main(config: ExportConfig) -> dict:
    """Export and check; returns {"output", "max_abs_diff"}."""
    from .checkpoint import load_generator
    checkpoint, output = Path(config.checkpoint), Path(config.output)
    check_paths(checkpoint, output, config.overwrite)
    generator = load_generator(checkpoint)
    export_generator(generator, output, config.opset)
    return {"output": str(output), "max_abs_diff": parity(generator, output)}


@cli_errors
def cli(argv: list[str] | None = None) -> dict:
    result = main(parse_args(argv))
    print(f"wrote {result['output']} (onnxruntime vs PyTorch at {CHECK_SIZE[1]}x{CHECK_SIZE[0]}: "
          f"max abs difference {result['max_abs_diff']:.2e})")
    return result


if __name__ == "__main__":
    cli()
