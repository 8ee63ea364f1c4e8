"""Export an assembly to ONNX or LiteRT, verified task by task against its SavedModel.

- :mod:`.exporting`: the entry point :func:`export_assembly`.
- :mod:`.graph`: the export graph, built from the components with ops the converters support.
- :mod:`.onnx`: tf2onnx conversion and :func:`open_onnx_runner` (ONNX Runtime).
- :mod:`.litert`: TFLiteConverter (builtin ops, quantization) and the LiteRT runner.
- :mod:`.verify`: the verification batch and the per-task comparison.
- :mod:`.layers`: a converter failure mapped back to the layer.

``export_assembly`` and ``open_onnx_runner`` are re-exported here (the worker's two calls).
"""

from modelhub.ml.export.exporting import export_assembly
from modelhub.ml.export.onnx import open_onnx_runner

__all__ = ["export_assembly", "open_onnx_runner"]
