"""`gatehouse camera snapshot|zones` and `gatehouse plates read` on real pictures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from camera_scenes import paste, road

from edge.cli import main
from tests.support.shared_data import HYPERLPR_SHA256, shared_data

pytestmark = pytest.mark.camera

CAR = "easypr_general_test/easypr_general_test_0004.jpg"


def write_config(tmp_path: Path, source: Path | str) -> Path:
    detector = shared_data() / "models" / "hyperlpr3-detector" / "y5fu_320x_sim.onnx"
    config = tmp_path / "gatehouse.yaml"
    config.write_text(
        f"""
site: {{id: test-site, home_province: 京, salt: test-salt-0123456789}}
gateway: {{id: gw-test, state_dir: "{tmp_path / "state"}"}}
inference:
  threads: 2
  plate_detector: {{path: "{detector}", sha256: {HYPERLPR_SHA256}}}
devices:
  - kind: camera
    id: yard-cam
    source: "{source}"
    plates: {{region: [0, 0, 640, 480]}}
    zones:
      - id: bays
        kind: parking
        polygon: [[0, 240], [640, 240], [640, 480], [0, 480]]
        spaces:
          - [[0, 240], [210, 240], [210, 480], [0, 480]]
          - [[215, 240], [425, 240], [425, 480], [215, 480]]
""",
        encoding="utf-8",
    )
    return config


@pytest.fixture
def yard(tmp_path: Path, photo) -> Path:  # type: ignore[no-untyped-def]
    import cv2

    video = tmp_path / "yard.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    frame = paste(road(), photo(CAR), 220, 250, 200)
    for _ in range(5):
        writer.write(frame)
    writer.release()
    return write_config(tmp_path, video)


def test_snapshot(yard: Path, tmp_path: Path) -> None:
    out = tmp_path / "snap.jpg"
    assert main(["-c", str(yard), "camera", "snapshot", "yard-cam", "--out", str(out)]) == 0
    assert out.read_bytes()[:2] == b"\xff\xd8"


def test_snapshot_without_out_as_in_the_readme_saves_id_jpg(
    yard: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["-c", str(yard), "camera", "snapshot", "yard-cam"]) == 0
    assert "frame saved to yard-cam.jpg" in capsys.readouterr().out
    assert (tmp_path / "yard-cam.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_an_out_name_without_an_image_extension_gets_jpg(
    yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-c", str(yard), "camera", "snapshot", "yard-cam", "--out", str(tmp_path / "snap")]) == 0
    assert f"frame saved to {tmp_path / 'snap.jpg'}" in capsys.readouterr().out
    assert (tmp_path / "snap.jpg").read_bytes()[:2] == b"\xff\xd8"
    picture = shared_data() / "plates" / CAR
    out = tmp_path / "annotated"
    assert main(["-c", str(yard), "plates", "read", str(picture), "--annotate", str(out)]) == 0
    assert f"annotated picture saved to {tmp_path / 'annotated.jpg'}" in capsys.readouterr().out
    assert (tmp_path / "annotated.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_zones_overlay(yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "zones.jpg"
    assert main(["-c", str(yard), "camera", "zones", "yard-cam", "--out", str(out)]) == 0
    assert "bays: 1/2 occupied" in capsys.readouterr().out
    assert out.stat().st_size > 1000


def test_unknown_camera_is_named(yard: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(yard), "camera", "snapshot", "yard-cma", "--out", "x.jpg"]) == 2
    assert "did you mean 'yard-cam'" in capsys.readouterr().err


def test_plates_read_json_and_annotate(
    yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = shared_data() / "plates" / CAR
    out = tmp_path / "annotated.jpg"
    code = main(["-c", str(yard), "plates", "read", str(picture), "--json", "--annotate", str(out)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["plates"][0]["plate"] == "京PC5U22"
    assert result["plates"][0]["colour"] == "blue"
    assert out.read_bytes()[:2] == b"\xff\xd8"


def test_plates_read_on_a_missing_file_says_so(
    yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such.jpg"
    assert main(["-c", str(yard), "plates", "read", str(missing)]) == 2
    assert f"error: {missing}: no such file" in capsys.readouterr().err


def test_devices_test_saves_a_frame(yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "test-out"
    code = main(["-c", str(yard), "devices", "test", "yard-cam", "--out", str(out), "--timeout", "10"])
    assert code == 0
    assert "grabbed a 640x480 frame" in capsys.readouterr().out
    assert (out / "yard-cam.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_plates_read_goes_on_after_a_picture_that_fails(
    yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = str(shared_data() / "plates" / CAR)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not a picture")
    missing = str(tmp_path / "no-such.jpg")
    code = main(["-c", str(yard), "plates", "read", picture, str(garbage), missing, picture, "--json"])
    assert code == 2
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["image"] for line in lines] == [picture, str(garbage), missing, picture]
    assert lines[0]["plates"][0]["plate"] == lines[3]["plates"][0]["plate"] == "京PC5U22"
    assert lines[1]["error"] == f"{garbage}: not an image OpenCV can read"
    assert lines[2]["error"] == f"{missing}: no such file"
    assert f"error: {missing}: no such file" in err


def test_plates_read_reports_an_annotated_picture_it_cannot_write(
    yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = str(shared_data() / "plates" / CAR)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "annotated.jpg"
    assert main(["-c", str(yard), "plates", "read", picture, "--json", "--annotate", str(out)]) == 2
    stdout, stderr = capsys.readouterr()
    line = json.loads(stdout)
    assert line["plates"][0]["plate"] == "京PC5U22"
    assert line["error"].startswith(f"cannot write {out}")
    assert f"error: cannot write {out}" in stderr


def test_zones_overlay_warns_of_a_zone_and_a_lane_outside_the_frame(
    yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = yard.read_text(encoding="utf-8").replace("region: [0, 0, 640, 480]", "region: [700, 0, 400, 300]")
    text = text.replace(
        "[[0, 240], [210, 240], [210, 480], [0, 480]]", "[[0, 600], [210, 600], [210, 700], [0, 700]]"
    )
    yard.write_text(text, encoding="utf-8")
    assert main(["-c", str(yard), "camera", "zones", "yard-cam", "--out", str(tmp_path / "zones.jpg")]) == 0
    out = capsys.readouterr().out
    assert (
        "warning: plate lane [700, 0, 400, 300]: outside the 640x480 frame, no plate in it is ever read"
        in out
    )
    assert "warning: zone bays space 1: x 0..210, y 600..700 is outside the 640x480 frame" in out


def test_plates_read_with_a_named_configuration_that_is_missing_does_not_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = str(shared_data() / "plates" / CAR)
    typo = tmp_path / "gatehous.yaml"
    assert main(["-c", str(typo), "plates", "read", picture]) == 2
    assert f"{typo}: no such file" in capsys.readouterr().err
    monkeypatch.setenv("GATEHOUSE_CONFIG", str(typo))
    assert main(["plates", "read", picture]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{typo}: no such file" in err


def test_plates_read_never_writes_an_annotated_picture_over_a_picture_it_reads(
    yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "gate.jpg"
    photo.write_bytes((shared_data() / "plates" / CAR).read_bytes())
    earlier = tmp_path / "out-2.jpg"  # written by an earlier run, now caught by *.jpg
    earlier.write_bytes(photo.read_bytes())
    before = photo.read_bytes()
    assert main(["-c", str(yard), "plates", "read", str(photo), "--annotate", str(photo)]) == 2
    assert f"would write {photo} over the picture {photo}" in capsys.readouterr().err
    assert photo.read_bytes() == before
    code = main(
        ["-c", str(yard), "plates", "read", str(photo), str(earlier), "--annotate", str(tmp_path / "out")]
    )
    assert code == 2
    assert f"would write {earlier} over the picture {earlier}" in capsys.readouterr().err
    assert earlier.read_bytes() == before
    assert not (tmp_path / "out-1.jpg").exists()


def test_a_camera_that_does_not_answer_is_said_in_our_words_only(tmp_path: Path) -> None:
    """No OpenCV or FFmpeg lines between ours: the installer reads one message that says what
    is wrong."""
    from sync.broker import free_port
    from tests.support.sync_helpers import start_cli

    config = write_config(tmp_path, f"rtsp://127.0.0.1:{free_port()}/stream")
    process = start_cli(config, "camera", "snapshot", "yard-cam", "--out", str(tmp_path / "s.jpg"))
    out, _ = process.communicate(timeout=60)
    said = out.decode()
    assert process.returncode == 1, said
    assert "yard-cam" in said
    assert "[ WARN" not in said and "[tcp @" not in said and "[ERROR" not in said, said


BACKDROP = (60, 140, 90)  # no blend of the label colours with black is this colour


def _bare_pixels_touching_text(picture: Any, text_colour: tuple[int, int, int]) -> int:
    """Pixels of the untouched picture right next to a pixel of the label's text: none when
    every letter sits on the label's dark backing, some when the backing is off the letters."""
    import cv2
    import numpy as np

    text = np.all(np.abs(picture.astype(np.int32) - np.array(text_colour)) <= 60, axis=2)
    assert text.sum() > 100, "no label drawn"
    ring = cv2.dilate(text.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~text
    bare = np.all(picture == np.array(BACKDROP, dtype=np.uint8), axis=2)
    return int((ring & bare).sum())


def test_an_annotated_plate_is_labelled_legibly(tmp_path: Path) -> None:
    """The label's dark backing sits under every letter (OpenCV 5 draws thick text wider than
    thin text, so a thick dark copy drawn under it no longer outlines the letters)."""
    import cv2
    import numpy as np

    from edge.cli.plates import draw_plates
    from models.plates.pipeline import PlateResult

    picture = np.full((480, 640, 3), BACKDROP, dtype=np.uint8)
    corners = np.array([[200, 300], [340, 300], [340, 344], [200, 344]], dtype=np.float32)
    result = PlateResult("京PC5U22", 0.998, "blue", (200, 300, 340, 344), corners, picture[300:344, 200:340])
    out = tmp_path / "annotated.png"
    draw_plates(picture, [result], out)
    assert _bare_pixels_touching_text(cv2.imread(str(out)), (0, 255, 255)) == 0


def test_a_zone_is_labelled_legibly() -> None:
    import numpy as np

    from drivers.camera.config import CameraConfig
    from edge.cli.camera import draw_zones

    camera = CameraConfig.model_validate(
        {
            "kind": "camera",
            "id": "yard-cam",
            "source": "yard.avi",
            "zones": [
                {
                    "id": "gate-queue",
                    "kind": "crowd",
                    "polygon": [[20, 20], [600, 20], [600, 400], [20, 400]],
                    "max_people": 8,
                }
            ],
        }
    )
    picture = np.full((480, 640, 3), BACKDROP, dtype=np.uint8)
    lines = draw_zones(picture, camera)
    assert lines[0] == "gate-queue: 0 people (alert at 8)"
    assert _bare_pixels_touching_text(picture, (255, 255, 255)) == 0
    assert (
        "warning: without inference.object_detector people are counted from what moves, which one "
        "picture cannot show: crowd zones read 0 here (the running gateway counts them)"
    ) in lines, "an installer reading 0 on a crowded picture is told why"


def test_opencv_says_nothing_of_a_usb_camera_that_is_not_there(tmp_path: Path) -> None:
    """OpenCV's own `[ERROR…] … Camera index out of range` line stays out of what the installer
    reads, as the command's start promises."""
    from tests.support.sync_helpers import start_cli

    config = write_config(tmp_path, "57")
    process = start_cli(config, "camera", "snapshot", "yard-cam", "--out", str(tmp_path / "s.jpg"))
    out, _ = process.communicate(timeout=60)
    said = out.decode()
    assert process.returncode == 1, said
    assert "yard-cam" in said
    assert "[ERROR" not in said and "[ WARN" not in said, said


def test_plates_read_with_a_model_it_cannot_load_is_no_picture_without_a_plate(
    yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit status 1 says the pictures hold no plate: a missing or different model file read
    no picture at all, and exits 2 (a failure, as the help says) naming the file."""
    picture = str(shared_data() / "plates" / CAR)
    wrong = HYPERLPR_SHA256[:-1] + ("0" if HYPERLPR_SHA256[-1] != "0" else "1")
    yard.write_text(yard.read_text(encoding="utf-8").replace(HYPERLPR_SHA256, wrong), encoding="utf-8")
    assert main(["-c", str(yard), "plates", "read", picture]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"expected {wrong}" in err
    missing = tmp_path / "y5fu.onnx"
    text = yard.read_text(encoding="utf-8")
    yard.write_text(
        text.replace(
            str(shared_data() / "models" / "hyperlpr3-detector" / "y5fu_320x_sim.onnx"), str(missing)
        ),
        encoding="utf-8",
    )
    assert main(["-c", str(yard), "plates", "read", picture, "--json"]) == 2
    assert f"file {missing} not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("{tmp}/lane.avi", "camera yard-cam: {tmp}/lane.avi: no such file"),
        ("{tmp}", "camera yard-cam: {tmp} is not a video file OpenCV can read"),
        ("57", "camera yard-cam: no camera at USB index 57; is it plugged in? (ls /dev/video* lists"),
        (
            "rtsp://gatehouse:pw@127.0.0.1:{port}/stream2",
            "camera yard-cam: cannot open rtsp://gatehouse:***@127.0.0.1:{port}/stream2 (no stream "
            "within 5 s); check its address, port, path, user and password",
        ),
    ],
    ids=["missing-file", "folder", "usb-index", "rtsp"],
)
def test_a_camera_that_cannot_be_opened_is_said_with_what_to_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, said: str
) -> None:
    from sync.broker import free_port

    port = free_port()
    config = write_config(tmp_path, source.format(tmp=tmp_path, port=port))
    assert main(["-c", str(config), "camera", "snapshot", "yard-cam", "--out", str(tmp_path / "s.jpg")]) == 1
    assert said.format(tmp=tmp_path, port=port) in capsys.readouterr().err


def test_devices_test_of_a_camera_whose_model_the_gateway_would_refuse_fails(
    yard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gateway does not run a camera whose plate detector is missing or different: its test
    says so rather than OK after grabbing a frame."""
    wrong = HYPERLPR_SHA256[:-1] + ("0" if HYPERLPR_SHA256[-1] != "0" else "1")
    yard.write_text(yard.read_text(encoding="utf-8").replace(HYPERLPR_SHA256, wrong), encoding="utf-8")
    code = main(
        ["-c", str(yard), "devices", "test", "yard-cam", "--out", str(tmp_path / "out"), "--timeout", "10"]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert "yard-cam: OK" not in out
    assert f"camera yard-cam: model plate_detector: {shared_data() / 'models'}" in err
    assert f"expected {wrong}" in err
