#!/usr/bin/env python3
"""Render the README's config reference from the schema: `--write README.md` (what `make docs` runs),
`--check README.md`, or print it. The logic is rlhf_cli.config.reference."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's schema

from rlhf_cli.config.reference import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
