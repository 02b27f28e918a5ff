"""What the GPU backends (torch-CUDA and TensorRT) share; no TensorRT here.

* :mod:`.frames` -- the frame graphs: YUV 4:2:0 planes in (and out), colour conversion on
  the device with a :class:`mpv_srunet.colour.Colour`; plain torch, so tested on the CPU.
* :mod:`.cuda`   -- pinned staging buffers, the three-stream pipeline and CUDA-graph replay.
"""
