"""``python -m medseg`` (used by ``torchrun -m medseg train ...``)."""

from medseg.cli.main import main

if __name__ == "__main__":
    main()
