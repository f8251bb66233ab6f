"""Export formats as a registry: one :class:`Exporter` per format, looked up by name.

An exporter knows how to write its artifact (:meth:`Exporter.export`), how to run it in its own
runtime (:meth:`Exporter.run`, the same ``(summary, patch)`` contract as the eager encoder), what
parity with eager it must reach (:meth:`Exporter.tolerance`) and how a user loads it
(:meth:`Exporter.how_to_load`). ``eupe-export --format`` offers :func:`list_exporters`, and the
command is one loop over :meth:`Exporter.check`. To add a format, subclass ``Exporter`` and
:func:`register_exporter` an instance at the end of this file (backends are imported lazily, so
listing formats stays cheap for ``--help``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from eupe.deploy.parity import FP32, INT8, Outputs, Tolerance, check_pixels, parity
from eupe.registry import Registry

if TYPE_CHECKING:
    import torch

    from eupe.deploy.source import StudentSource
    from eupe.models.features import Encoder


class Exporter(ABC):
    """One export format: write, run, judge and load its artifacts."""

    name: ClassVar[str]
    runtime: ClassVar[str]  # what runs the artifact in the parity check
    help: ClassVar[str]  # one line for ``eupe-export --help``
    quantize_choices: ClassVar[tuple[str, ...]] = ()
    per_resolution: ClassVar[bool] = True  # one artifact per --resolution (else one file for any size)

    @abstractmethod
    def filename(self, resolution: int, quantize: str | None) -> str:
        """The artifact's file name in the output directory."""

    @abstractmethod
    def export(self, source: StudentSource, path: Path, resolution: int, quantize: str | None) -> Path:
        """Write the artifact of ``source`` to ``path`` and return the path written."""

    @abstractmethod
    def run(self, path: Path, pixels: torch.Tensor) -> Outputs:
        """The artifact's ``(summary [B, D], patch [B, h, w, D])`` on ``pixels [B, 3, R, R]`` in its runtime."""

    @abstractmethod
    def how_to_load(self, source: StudentSource, path: Path) -> str:
        """One line of Python that loads the artifact (for the model card)."""

    def tolerance(self, quantize: str | None) -> Tolerance:
        """fp32: max abs diff <= 1e-4; quantized: mean cosine >= 0.99."""
        return FP32 if quantize is None else INT8

    def latency_ms(self, path: Path, resolution: int, repeats: int) -> float | None:
        """Median batch-1 latency of the artifact in its runtime (None: same as eager)."""
        return None

    def check(self, encoder: Encoder, path: Path, resolution: int, quantize: str | None,
              images: int = 3) -> dict[str, Any]:
        """Run the artifact and eager on held-out photos: the parity row of the model card."""
        pixels = check_pixels(resolution, images)
        result = parity(encoder, partial(self.run, path), pixels)
        tolerance = self.tolerance(quantize)
        return {"artifact": path.name, "runtime": self.runtime, "resolution": resolution, "images": len(pixels),
                **result, "threshold": str(tolerance), "passed": tolerance.passes(result)}


class SafetensorsExporter(Exporter):
    """A timm / Hub model folder (``model.safetensors`` + ``config.json``, no adapter heads), checked by
    loading the folder with ``timm.create_model("local-dir:...")``: its pooled output against the summary."""

    name, runtime = "safetensors", "timm"
    help = "timm / Hugging Face model folder: model.safetensors + config.json (any input size)"
    per_resolution = False

    def filename(self, resolution: int, quantize: str | None) -> str:
        from eupe.deploy.timm_export import SAFETENSORS_FILENAME

        return SAFETENSORS_FILENAME

    def export(self, source: StudentSource, path: Path, resolution: int, quantize: str | None) -> Path:
        from eupe.deploy.timm_export import export_folder

        return export_folder(source.encoder, path.parent, source.training_resolution(), source.identity(),
                             test_scale=source.test_scale, info=source.info)

    def run(self, path: Path, pixels: torch.Tensor) -> Outputs:
        from eupe.deploy.timm_export import run_timm

        return run_timm(path, pixels)

    def how_to_load(self, source: StudentSource, path: Path) -> str:
        return f'timm.create_model("local-dir:<this folder>", pretrained=True)  # {path.name} + config.json'


class ExecuTorchExporter(Exporter):
    """An XNNPACK-delegated ExecuTorch ``.pte`` per input size, fp32 or int8, run by the ExecuTorch runtime."""

    name, runtime = "executorch", "executorch"
    help = "XNNPACK .pte program per --resolution, for phones (fp32, or --quantize int8)"
    quantize_choices = ("int8",)

    def filename(self, resolution: int, quantize: str | None) -> str:
        return f"model_{resolution}{'_' + quantize if quantize else ''}.pte"

    def export(self, source: StudentSource, path: Path, resolution: int, quantize: str | None) -> Path:
        from eupe.deploy.executorch_export import export_pte

        return export_pte(source.encoder, resolution, path, quantize)

    def run(self, path: Path, pixels: torch.Tensor) -> Outputs:
        from eupe.deploy.executorch_export import run_pte

        return run_pte(path, pixels)

    def how_to_load(self, source: StudentSource, path: Path) -> str:
        return f"executorch.runtime.Runtime.get().load_program('{path.name}').load_method('forward')"

    def latency_ms(self, path: Path, resolution: int, repeats: int) -> float | None:
        from eupe.deploy.latency import pte_latency_ms

        return pte_latency_ms(path, resolution, repeats)


class OnnxExporter(Exporter):
    """An ONNX graph per input size (dynamic batch), run by onnxruntime on CPU."""

    name, runtime = "onnx", "onnxruntime"
    help = "ONNX graph per --resolution, dynamic batch (onnxruntime and others)"

    def filename(self, resolution: int, quantize: str | None) -> str:
        return f"model_{resolution}.onnx"

    def export(self, source: StudentSource, path: Path, resolution: int, quantize: str | None) -> Path:
        from eupe.deploy.onnx_export import export_onnx

        return export_onnx(source.encoder, resolution, path)

    def run(self, path: Path, pixels: torch.Tensor) -> Outputs:
        from eupe.deploy.onnx_export import run_onnx

        return run_onnx(path, pixels)

    def how_to_load(self, source: StudentSource, path: Path) -> str:
        return f"onnxruntime.InferenceSession('{path.name}')"

    def latency_ms(self, path: Path, resolution: int, repeats: int) -> float | None:
        from eupe.deploy.onnx_export import onnx_latency_ms

        return onnx_latency_ms(path, resolution, repeats)


EXPORTERS: Registry[Exporter] = Registry("export format")


def register_exporter(exporter: Exporter) -> Exporter:
    """Add an export format under ``exporter.name``."""
    return EXPORTERS.register(exporter.name, exporter)


def get_exporter(name: str) -> Exporter:
    """The exporter of a format (``UnknownNameError`` lists the valid ones)."""
    return EXPORTERS.get(name)


def list_exporters() -> list[str]:
    """Names of the registered export formats."""
    return EXPORTERS.names()


def quantize_choices() -> list[str]:
    """Every quantization some registered format supports."""
    return sorted({q for name in EXPORTERS.names() for q in EXPORTERS.get(name).quantize_choices})


for _exporter in (SafetensorsExporter(), ExecuTorchExporter(), OnnxExporter()):
    register_exporter(_exporter)
