"""rlhf-cli: one command-line tool for the whole alignment pipeline."""
__version__ = "0.1.0"
