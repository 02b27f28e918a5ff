"""TensorRT engines for SR-UNet: the engine-ready ONNX graph, the engine cache, the builder.

Layout (each module imports TensorRT lazily, so everything but the build and the
runtime works, and is tested, on machines without a GPU):

* :mod:`.graph`   -- the ONNX graph that goes into TensorRT: SR-UNet with the
  input normalisation and, for YUV inputs, the colour conversion folded in
  (uint8/10-bit planes in, uint8 RGB out; :mod:`mpv_srunet.gpu.frames`), in fp32
  or as an FP16 graph.
* :mod:`.cache`   -- engine cache keys, sidecar metadata, stale detection,
  atomic writes and the cross-process build lock.
* :mod:`.builder` -- what needs TensorRT: machine probe, engine build with
  optimization profiles and a timing cache, TensorRT 10 and 11.
* :mod:`.runtime` -- deserialize an engine and run it on a dedicated CUDA stream
  with torch CUDA tensors as device buffers (the pipeline of
  :mod:`mpv_srunet.gpu.cuda`, shared with the torch-CUDA backend).
"""
