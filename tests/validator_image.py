"""The IIIF validator's test image, under the identifier the validator asks for."""

from __future__ import annotations

import shutil
from pathlib import Path

VALIDATOR_ID = "67352ccc-d1b0-11e1-89ae-279075081939"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "iiif-validator"


def install_validator_image(root: Path) -> Path:
    """Copy the validator's PNG into `root` (regenerating it when shared/ is absent)."""
    target = root / f"{VALIDATOR_ID}.png"
    if target.exists():
        return target
    shipped = SHARED / f"{VALIDATOR_ID}.png"
    if shipped.exists():
        shutil.copyfile(shipped, target)
    else:
        _regenerate(target)
    return target


def _regenerate(target: Path) -> None:
    """Draw the validator's 10x10 grid of 100 px squares from its own colour table."""
    import pyvips
    from iiif_validator.validator import ValidationInfo

    colours = ValidationInfo().colorInfo
    rows = []
    for y in range(10):
        row = [
            pyvips.Image.black(100, 100, bands=3).new_from_image(list(colours[x][y]))
            for x in range(10)
        ]
        rows.append(pyvips.Image.arrayjoin(row))
    pyvips.Image.arrayjoin(rows, across=1).cast("uchar").write_to_file(str(target))
