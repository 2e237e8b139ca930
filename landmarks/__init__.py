"""landmarks: recognise landmarks in photos and tag photos with them."""

__version__ = "0.1.0"
