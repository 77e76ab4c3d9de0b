"""The plate pipeline on a fixed sample of real photos (shared/data/plates), with readings
asserted: blue, yellow, learner (学), green new-energy plates, crops, and foreign scenes that
must not come out as Chinese plates."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.plates.pipeline import PlatePipeline, load_image

FULL_SCENES = [
    ("easypr_general_test/easypr_general_test_0004.jpg", "京PC5U22", "blue"),
    ("easypr_general_test/easypr_general_test_0008.jpg", "川A09X20", "blue"),
    ("easypr_general_test/easypr_general_test_0060.jpg", "浙A12210", "yellow"),
    ("easypr_general_test/easypr_general_test_0088.jpg", "渝B3587学", "yellow"),
    ("ccpd_hukai97/ccpd_hukai97_0005.jpg", "皖AF05568", "green"),
    ("ccpd_zhijucen/ccpd_zhijucen_0001.jpg", "皖AY766D", "blue"),
]
CROPS = [
    ("lprnet_sirius_crops/lprnet_sirius_crops_0000.jpg", "京PL3N67"),
    ("lprnet_sirius_crops/lprnet_sirius_crops_0184.jpg", "皖A71920"),
    ("lprnet_sirius_crops/lprnet_sirius_crops_0367.jpg", "皖AD563A"),
]
FOREIGN = [
    "openalpr_eu/openalpr_eu_0017.jpg",
    "openalpr_us/openalpr_us_0015.jpg",
    "openalpr_us/openalpr_us_0156.jpg",
]


@pytest.mark.parametrize(("file", "plate", "colour"), FULL_SCENES)
def test_full_scene(pipeline: PlatePipeline, shared: Path, file: str, plate: str, colour: str) -> None:
    results = pipeline.read(load_image(str(shared / "plates" / file)))
    assert results, f"no plate read in {file}"
    assert results[0].plate == plate
    assert results[0].colour == colour
    assert 0 < results[0].confidence <= 1
    x1, y1, x2, y2 = results[0].box
    assert x2 > x1 and y2 > y1


@pytest.mark.parametrize(("file", "plate"), CROPS)
def test_crop(pipeline: PlatePipeline, shared: Path, file: str, plate: str) -> None:
    result = pipeline.read_crop(load_image(str(shared / "plates" / file)))
    assert result is not None and result.plate == plate


@pytest.mark.parametrize("file", FOREIGN)
def test_foreign_plate_is_not_read_as_chinese(pipeline: PlatePipeline, shared: Path, file: str) -> None:
    assert pipeline.read(load_image(str(shared / "plates" / file))) == []


def test_lane_region_limits_the_search(pipeline: PlatePipeline, shared: Path) -> None:
    from models.plates.pipeline import Region

    image = load_image(str(shared / "plates" / FULL_SCENES[0][0]))
    assert pipeline.read(image, Region(0, 0, 150, 150)) == []
    found = pipeline.read(image, Region(150, 150, 300, 200))
    assert found and found[0].plate == "京PC5U22"
    assert found[0].box[0] >= 150


def test_a_lane_region_starting_left_of_the_frame_ends_where_configured(
    pipeline: PlatePipeline, shared: Path
) -> None:
    from models.plates.pipeline import Region

    image = load_image(str(shared / "plates" / FULL_SCENES[0][0]))  # the plate at x 202..343
    assert pipeline.read(image, Region(-300, 0, 500, 572)) == []  # x 0..200 of the frame
    assert pipeline.read(image, Region(-100, 0, 500, 572))[0].plate == "京PC5U22"  # x 0..400


def test_sessions_are_created_once(pipeline: PlatePipeline, shared: Path) -> None:
    pipeline.read(load_image(str(shared / "plates" / FULL_SCENES[1][0])))
    built = pipeline.factory.pool.built
    pipeline.read(load_image(str(shared / "plates" / FULL_SCENES[1][0])))
    assert pipeline.factory.pool.built == built


def test_home_province_does_not_override_a_clear_reading(shared: Path, recommended_inference) -> None:  # type: ignore[no-untyped-def]
    local = PlatePipeline(recommended_inference, home_province="津")
    results = local.read(load_image(str(shared / "plates" / FULL_SCENES[0][0])))
    assert results[0].plate == "京PC5U22"
