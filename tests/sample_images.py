"""The sample image set: what `make run` serves and what integration tests request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.images import make_jpeg, make_png, make_pyramid_tiff, make_tiled_jp2
from tests.validator_image import install_validator_image

# Identifier -> (maker, file name). Sizes are small for tests, larger for `make run`.
SAMPLE_IDS = ("sample-tiled", "sample-pyramid", "sample-photo", "sample-png")


def make_sample_images(root: Path, small: bool = False) -> None:
    """Write the sample images into `root`, skipping those already there."""
    root.mkdir(parents=True, exist_ok=True)
    w, h = (1200, 900) if small else (6000, 4500)
    jobs: tuple[tuple[Path, Callable[[Path], object]], ...] = (
        (root / "sample-tiled.jp2", lambda p: make_tiled_jp2(p, w, h, tile=256 if small else 1024)),
        (root / "sample-pyramid.tif", lambda p: make_pyramid_tiff(p, w, h, tile=256)),
        (root / "sample-photo.jpg", lambda p: make_jpeg(p, w, h)),
        (root / "sample-png.png", lambda p: make_png(p, w // 2, h // 2)),
    )
    for path, make in jobs:
        if not path.exists():
            tmp = path.with_name(path.name + ".part" + path.suffix)
            make(tmp)
            tmp.rename(path)
    install_validator_image(root)
