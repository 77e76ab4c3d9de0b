"""The optional models configured by path: HyperLPR's colour classifier and YOLOX-Nano."""

from __future__ import annotations

from pathlib import Path

from models.config import InferenceConfig, ModelFileConfig, ZoneConfig
from models.plates.pipeline import PlatePipeline, load_image

CLASSIFIER_SHA256 = "fe123688d3bf08b9ef029fcd57f3ac4644ac2e5ef8b9e7a676aacd5fad152142"
YOLOX_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"


def test_colour_classifier(shared: Path, recommended_inference: InferenceConfig) -> None:
    classifier = shared / "models" / "hyperlpr3-detector" / "litemodel_cls_96x_r1.onnx"
    inference = recommended_inference.model_copy(
        update={"plate_classifier": ModelFileConfig(path=str(classifier), sha256=CLASSIFIER_SHA256)}
    )
    pipeline = PlatePipeline(inference)
    plates = shared / "plates" / "easypr_general_test"
    blue = pipeline.read(load_image(str(plates / "easypr_general_test_0004.jpg")))
    yellow = pipeline.read(load_image(str(plates / "easypr_general_test_0060.jpg")))
    assert (blue[0].plate, blue[0].colour) == ("京PC5U22", "blue")
    assert (yellow[0].plate, yellow[0].colour) == ("浙A12210", "yellow")


def test_yolox_finds_the_car_and_fills_the_space(shared: Path) -> None:
    from models.manifest import optional_spec
    from models.objects import VEHICLES, ObjectDetector
    from models.occupancy import OccupancyMonitor
    from models.runtime import SessionFactory

    spec = optional_spec(
        "object_detector",
        ModelFileConfig(path=str(shared / "models" / "yolox-nano" / "yolox_nano.onnx"), sha256=YOLOX_SHA256),
    )
    detector = ObjectDetector(SessionFactory(2), spec)
    image = load_image(str(shared / "plates" / "easypr_general_test" / "easypr_general_test_0004.jpg"))
    vehicles = [d for d in detector.detect(image) if d.cls in VEHICLES]
    assert vehicles, "a car in a gate photo"
    h, w = image.shape[:2]
    whole = ZoneConfig(id="bay", kind="parking", polygon=[(0, 0), (w, 0), (w, h), (0, h)])
    corner = ZoneConfig(id="corner", kind="parking", polygon=[(0, 0), (20, 0), (20, 20), (0, 20)])
    states, _ = OccupancyMonitor([whole, corner], lambda: 0.0, detector=detector).update(image)
    assert [s.occupied for s in states] == [1, 0]
