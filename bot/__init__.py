"""clipbot: search a picture collection with words and pictures, using CLIP."""

__version__ = "0.1.0"
