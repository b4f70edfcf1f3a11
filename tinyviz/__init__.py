"""tinyviz: train tiny GPT-style transformers and watch them learn."""

__version__ = "0.1.0"
FORMAT_VERSION = 1  # of the run folder; a run written by a newer format is refused with a sentence
