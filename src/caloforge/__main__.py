"""``python -m caloforge`` (and ``torchrun -m caloforge``) runs the CLI."""

from caloforge.cli.main import main

if __name__ == "__main__":
    main()
