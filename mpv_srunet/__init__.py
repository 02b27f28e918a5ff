"""mpv-srunet: SR-UNet upscaling and compression-artifact removal for mpv.

    >>> from mpv_srunet import Upscaler
    >>> out = Upscaler().upscale(rgb)   # HxWx3 uint8 -> 2Hx2Wx3 uint8
"""

__version__ = "0.1.0"

__all__ = ["Upscaler", "__version__"]


def __getattr__(name: str):
    # Lazy: `import mpv_srunet` stays cheap (no torch import) for the CLI and the mpv script.
    if name == "Upscaler":
        from .filter import Upscaler

        return Upscaler
    raise AttributeError(name)
