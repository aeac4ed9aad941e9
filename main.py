"""Seed-compatible entry point: ``python main.py`` serves the API (a thin shim over ``useg serve``)."""

from unified_segmentation.cli.app import main

if __name__ == "__main__":
    main(["serve"])
