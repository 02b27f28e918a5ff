"""Offline training of SR-UNet weights (issue 3): data pairs, losses, loop, fine-tuning.

Nothing the player runs imports this package: it needs the ``train`` extra
(pytorch-msssim, matplotlib) and is only used by ``mpv-srunet train`` and
``mpv-srunet finetune``.

Modules:

* :mod:`.data`: ``train prepare``: ground truth + its x2-downscaled, libx265-encoded,
  decoded input, stored as memory-mappable ``.npy``; random patch sampling.
* :mod:`.losses`: L1, 1-SSIM, LPIPS(VGG) and the adversarial BCE term.
* :mod:`.discriminator`: the SRGAN-style discriminator of the paper.
* :mod:`.checkpoint`: atomic, exactly-resumable checkpoints.
* :mod:`.loop`: the training loop (warm start then GAN phase), validation, run log.
* :mod:`.finetune`: per-video over-fitting of a ``lite`` model (the paper's third experiment).
"""
