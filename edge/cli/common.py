"""Helpers the sub-command modules share."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import shutil
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from edge.config import DEFAULT_CONFIG_PATH
from edge.errors import GatehouseError

if TYPE_CHECKING:
    from edge.config_edit import ConfigDocument


def config_path(args: argparse.Namespace) -> Path:
    """--config, else $GATEHOUSE_CONFIG, else /etc/gatehouse/gatehouse.yaml."""
    chosen = getattr(args, "config", None) or os.environ.get("GATEHOUSE_CONFIG")
    return Path(chosen) if chosen else DEFAULT_CONFIG_PATH


def load(args: argparse.Namespace) -> Any:
    from edge.config_loader import load_config

    return load_config(config_path(args))


def site_zone(config: Any) -> ZoneInfo:
    """The compound's time zone (`site.timezone`): the CLI shows times in it, and reads a time
    typed without a zone as a time there."""
    return ZoneInfo(config.site.timezone)


def counted(number: int, noun: str) -> str:
    """`1 device`, `2 devices`: a count as people write it (nouns whose plural adds an s)."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def own_command() -> str:
    """How the person at the terminal runs this gatehouse again: `gatehouse` when their PATH
    finds this very one (an installed gateway, an activated venv), else the path of the one
    running (`.venv/bin/gatehouse` after the quick start, which activates nothing); also
    `gatehouse` when run as `python -m edge.cli`."""
    running = Path(sys.argv[0])
    if running.name != "gatehouse":
        return "gatehouse"
    found = shutil.which("gatehouse")
    if found is not None and Path(found).resolve() == running.resolve():
        return "gatehouse"
    with contextlib.suppress(ValueError):
        relative = running.absolute().relative_to(Path.cwd())
        return str(relative) if len(relative.parts) > 1 else f"./{relative}"
    return str(running.absolute())


def command_line(args: argparse.Namespace, action: str) -> str:
    """`gatehouse [--config FILE] ACTION [--credentials-dir DIR]` as a command suggests the next
    one: with the --config and --credentials-dir it was given, so that the next command changes
    the same file with the same secrets (a file named by $GATEHOUSE_CONFIG is still named by it).
    `action` must be a command that takes --credentials-dir when this one was given it."""
    config = getattr(args, "config", None)
    credentials = getattr(args, "credentials_dir", None)
    return (
        f"{own_command()}{f' --config {config}' if config else ''} {action}"
        f"{f' --credentials-dir {credentials}' if credentials else ''}"
    )


def add_command(
    subparsers: Any, name: str, help_text: str, func: Any, description: str | None = None
) -> argparse.ArgumentParser:
    """Add a sub-command whose help is always set (a test checks every command has some)."""
    parser = subparsers.add_parser(name, help=help_text, description=description or help_text)
    parser.set_defaults(func=func)
    return parser


def count_of(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum`, else a usage error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of {minimum} or more")
        return value

    return parse


def positive(text: str) -> float:
    """An argparse type for a duration or an amount that must be more than 0 (a timeout of -1
    would only say 'no frame within -1 s')."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def more_not_shown(shown: list[Any], fetched: list[Any], what: str) -> None:
    """Say on stderr (piped output stays clean) that a listing was cut at --limit: the caller
    fetched one more than it shows."""
    if len(fetched) > len(shown):
        print(f"(older {what} not shown; raise --limit to see them)", file=sys.stderr)


def width_of(text: str) -> int:
    """Columns `text` takes in a terminal: Chinese characters (a plate's province, a gate's
    name) take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def padded(text: str, width: int) -> str:
    """`text` padded with spaces to `width` terminal columns (str.ljust counts characters)."""
    return text + " " * max(0, width - width_of(text))


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows as aligned columns (the first row is the heading); the last column is not padded."""
    widths = [max(width_of(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [padded(cell, width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def add_change_options(parser: argparse.ArgumentParser) -> None:
    """--dry-run and --credentials-dir, for the commands that change the configuration file."""
    from edge.cli.init import add_credentials_option

    parser.add_argument("--dry-run", action="store_true", help="show the change, write nothing")
    add_credentials_option(parser)


@contextlib.contextmanager
def changing_config(args: argparse.Namespace) -> Iterator[ConfigDocument]:
    """The configuration file for the block to change, with the secrets as the service sees them.
    After the block: the whole changed configuration is validated (ConfigError, nothing written,
    when it would not load), the change is printed as a diff and written unless --dry-run. An
    error inside the block writes nothing."""
    from edge.cli.init import service_credentials
    from edge.config_edit import ConfigDocument

    with service_credentials(args):
        document = ConfigDocument(config_path(args))
        yield document
        document.validated()
    diff = difflib.unified_diff(
        document.original.splitlines(keepends=True),
        document.text().splitlines(keepends=True),
        fromfile=str(document.path),
        tofile=f"{document.path} (dry run, not written)" if args.dry_run else str(document.path),
    )
    print("".join(diff), end="")
    if args.dry_run:
        return
    document.save()
    print(f"wrote {document.path}; the running gateway takes it with: sudo systemctl reload gatehouse")


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def image_path(name: str | Path) -> Path:
    """Where to save a picture named `name`: as given when it ends in an image extension OpenCV
    writes, else with .jpg added (`--out snap` writes snap.jpg)."""
    path = Path(name)
    return path if path.suffix.lower() in IMAGE_SUFFIXES else path.with_name(f"{path.name}.jpg")


def write_image(path: Path, image: Any) -> None:
    """Save `image` at `path` (see image_path), making its folder; GatehouseError saying why not."""
    import cv2

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(path), image)
    except (OSError, cv2.error) as err:
        raise GatehouseError(f"cannot write {path}: {getattr(err, 'strerror', None) or err}") from err
    if not written:
        raise GatehouseError(f"cannot write {path}; check that its folder is writable")


def draw_label(image: Any, text: str, origin: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """`text` in `colour` on a black box, from `origin` (x, y of the baseline's left end), moved
    inside the picture where it would reach beyond it. A box rather than a thick dark copy of the
    text under it: OpenCV 5 draws thick text wider than thin, so that copy misses the letters."""
    import cv2

    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.6
    (width, height), baseline = cv2.getTextSize(text, font, scale, 1)
    rows, columns = image.shape[:2]
    x = max(3, min(origin[0], columns - width - 3))
    y = max(height + 4, min(origin[1], rows - baseline - 2))
    cv2.rectangle(image, (x - 3, y - height - 4), (x + width + 3, y + baseline + 2), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x, y), font, scale, colour, 1, cv2.LINE_AA)
