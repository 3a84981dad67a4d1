"""`python -m kubetune_trainer.samples DATA_ROOT`: copy the sample files to DATA_ROOT/data/."""

from __future__ import annotations

import sys

from kubetune_trainer.samples import copy_samples


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kubetune_trainer.samples DATA_ROOT", file=sys.stderr)
        return 2
    for path in copy_samples(args[0]):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
