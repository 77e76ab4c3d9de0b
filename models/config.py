"""The inference section (`inference:`): threads and optional model files."""

from pydantic import Field

from edge.config_base import StrictModel


class ModelFileConfig(StrictModel):
    path: str = Field(description="path of the ONNX file on the gateway")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="expected sha256 of the file; it is checked before loading",
    )


class InferenceConfig(StrictModel):
    threads: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="ONNX Runtime intra-op threads; default: the CPU cores",
    )
    plate_detector: ModelFileConfig | None = Field(
        default=None, description="optional Chinese plate corner detector (HyperLPR y5fu_320x)"
    )
    plate_classifier: ModelFileConfig | None = Field(
        default=None, description="optional plate colour classifier (HyperLPR litemodel_cls_96x)"
    )
    object_detector: ModelFileConfig | None = Field(
        default=None, description="optional vehicle/person detector (YOLOX-Nano 416x416)"
    )
