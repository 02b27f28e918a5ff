"""`mpv-srunet eval`: the paper's quality protocol (Vaccaro et al., ACM MM 2021, Sec. 4).

Reference video -> downscale x2 -> H.265 (libx265, CRF list) -> decode -> upscale with
each candidate (bicubic, SR-UNet weights, mpv's scalers) -> PSNR/SSIM (Y, RGB), LPIPS-alex,
VMAF, temporal flicker against the reference, grid share against the candidate's input; tables (Markdown, CSV, JSON), rate-distortion
plots and side-by-side crops. Nothing at playback time imports this package.

Modules: :mod:`.media` (references in), :mod:`.codec` (degradation),
:mod:`.candidates` (upscalers), :mod:`.protocol` (the run), :mod:`.report`
(outputs), :mod:`.bdrate`, :mod:`.clips` (``eval make-clips``).
"""
