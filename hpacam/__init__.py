"""hpacam: weakly-supervised single-cell protein localisation on Human Protein Atlas images.

Shared code for the four pipeline stages. Submodules import heavy libraries (torch,
TensorFlow) only where they need them, so each stage installs and imports only its own.
"""

__version__ = "0.1.0"
