"""The model manifest: every ONNX file Gatehouse can run, with its checksum, licence and shape.

The default plate models are the PP-OCRv4 text detector and recogniser that the
`rapidocr-onnxruntime` 1.4.x wheel carries; they are found inside that installed package, never
downloaded. The optional models (HyperLPR plate detector and colour classifier, YOLOX-Nano) are
configured by path and sha256 in the `inference:` section."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelError
from models.config import InferenceConfig, ModelFileConfig

RAPIDOCR_PACKAGE = "rapidocr_onnxruntime"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    path: Path
    sha256: str
    licence: str
    input_shape: tuple[int | str, ...]
    source: str


# Files of the rapidocr-onnxruntime 1.4.x wheel (identical in 1.4.0 to 1.4.4).
_PPOCR_FILES = {
    "ppocr_det": (
        "ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        (1, 3, "H", "W"),
    ),
    "ppocr_rec": (
        "ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        ("N", 3, 48, "W"),
    ),
}

_OPTIONAL = {
    "plate_detector": (
        (1, 3, 320, 320),
        "Apache-2.0; HyperLPR y5fu_320x_sim.onnx (szad670401/HyperLPR resource/models/onnx)",
    ),
    "plate_classifier": (
        (1, 3, 96, 96),
        "Apache-2.0; HyperLPR litemodel_cls_96x_r1.onnx (szad670401/HyperLPR resource/models/onnx)",
    ),
    "object_detector": (
        (1, 3, 416, 416),
        "Apache-2.0; YOLOX-Nano (Megvii YOLOX), BGR 0-255 export",
    ),
}


def rapidocr_models_dir() -> Path:
    """The `models/` folder of the installed rapidocr-onnxruntime package."""
    spec = importlib.util.find_spec(RAPIDOCR_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default plate models come from the rapidocr-onnxruntime package, which is not "
            "installed: pip install 'rapidocr-onnxruntime>=1.4,<1.5'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def default_spec(name: str) -> ModelSpec:
    """The spec of a default model (`ppocr_det` or `ppocr_rec`)."""
    try:
        file_name, sha256, shape = _PPOCR_FILES[name]
    except KeyError:
        raise ModelError(f"no default model named {name!r}") from None
    return ModelSpec(
        name=name,
        path=rapidocr_models_dir() / file_name,
        sha256=sha256,
        licence="Apache-2.0",
        input_shape=shape,
        source=f"{RAPIDOCR_PACKAGE} wheel, models/{file_name}",
    )


def optional_spec(name: str, config: ModelFileConfig) -> ModelSpec:
    """The spec of an optional model configured by path (`plate_detector`, ...)."""
    shape, source = _OPTIONAL[name]
    return ModelSpec(
        name=name,
        path=Path(config.path).expanduser(),
        sha256=config.sha256,
        licence="Apache-2.0",
        input_shape=shape,
        source=source,
    )


def manifest(config: InferenceConfig) -> list[ModelSpec]:
    """Every model this configuration will use, defaults first."""
    specs = [default_spec(name) for name in _PPOCR_FILES]
    for name in _OPTIONAL:
        chosen = getattr(config, name)
        if chosen is not None:
            specs.append(optional_spec(name, chosen))
    return specs
