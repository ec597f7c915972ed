"""LandmarkTalk engine: plain Python + torch, never imports ComfyUI.

Stages live one per module (``media``, ``face``, ``audio``, ``latents``, ``sampling``, ``render``…);
models one per file under ``models/``. Nothing happens on import.
"""

__version__ = "0.1.0"
