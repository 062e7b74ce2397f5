"""rnnlab: recurrent sequence models on real text, trained with Lightning and configured with Hydra."""

__version__ = "0.1.0"
