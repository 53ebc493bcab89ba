"""Write the sample images `make run` serves: `python scripts/make_samples.py DIR`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sample_images import make_sample_images

if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "var/images")
    make_sample_images(target)
    print(f"sample images in {target}: {', '.join(sorted(p.name for p in target.iterdir()))}")
