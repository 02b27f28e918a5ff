"""torch.compile without a stall: compile per input shape in a background thread, eager meanwhile.

Shared by the two PyTorch runtimes (``torch-cuda`` and ``torch-cpu``), so it is a helper
of theirs, not a runtime of its own. A :class:`BackgroundCompiler` wraps a module and
the function that calls it (with the caller's contexts: inference mode, autocast):

* a call with an input shape it has not seen starts compiling that shape on a
  background thread and returns the eager result at once (playback never waits);
* the thread compiles ``torch.compile(module, dynamic=False, mode=...)`` and runs it
  once on zeros of that shape *through the same call function*, so that the guards
  Dynamo installs match the real calls (a mismatch would recompile on the caller);
* later calls of that shape run the compiled module;
* a compile that raises (no C++ compiler or Triton, out of memory at 4K, an Inductor
  bug) is logged once, and every shape stays eager from then on.

One compile runs at a time (the thread works through the shapes in order). Inductor's
on-disk caches (FX graph cache, kernels, autotuning) go to the user cache dir, so a
second start compiles from the cache in seconds instead of minutes.

CUDA graphs: Inductor's ``reduce-overhead`` mode keeps its CUDA-graph trees per thread,
so graphs recorded by the compiling thread would be re-recorded on the inference thread;
the default mode is therefore ``max-autotune-no-cudagraphs``, and the backend's own
CUDA graphs (:class:`mpv_srunet.gpu.cuda.GraphReplay`) capture the compiled module once
its shape is ready.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

#: Inductor's modes that this wrapper accepts (``reduce-overhead`` excluded: see the module docstring).
MODES = ("max-autotune-no-cudagraphs", "default")

#: call(module_or_compiled, *inputs) -> output: runs the module with the caller's contexts.
CallFn = Callable[..., torch.Tensor]


def inductor_cache_dir() -> Path:
    """Where Inductor keeps its caches: ``$TORCHINDUCTOR_CACHE_DIR``, else ``<user cache>/inductor``."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mpv-srunet", appauthor=False)) / "inductor"


def use_inductor_cache() -> Path:
    """Point Inductor's on-disk caches at :func:`inductor_cache_dir` (before the first compile)."""
    d = inductor_cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(d))
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    return d


def compile_unavailable_reason(device: str = "cpu") -> str | None:
    """None when torch.compile (Inductor) can run for ``device`` here, else a one-line reason."""
    import shutil

    try:
        import torch._dynamo  # noqa: F401
        import torch._inductor  # noqa: F401
    except ImportError as e:
        return f"torch {torch.__version__} has no torch.compile ({e})"
    if device == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (Inductor needs it for CUDA kernels)"
        return None
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler on PATH (Inductor needs one for CPU kernels)"
    return None


def compile_module(module: torch.nn.Module, mode: str) -> Callable[..., Any]:
    """torch.compile with static shapes (one graph per frame size) and unfrozen weights, so
    that an in-place weights swap (``load_weights``) reaches the compiled module too."""
    from torch._inductor import list_mode_options

    options = {**list_mode_options(mode), "freezing": False}
    return torch.compile(module, dynamic=False, options=options)


def _shape_key(inputs: tuple[torch.Tensor, ...]) -> tuple:
    """Shapes only: a compiler serves one module whose input dtypes do not change, and the CUDA
    pipeline asks :meth:`BackgroundCompiler.settled` with its float32 frames (the model sees fp16)."""
    return tuple(tuple(t.shape) for t in inputs)


class BackgroundCompiler:
    """Eager now, compiled once ready; see the module docstring."""

    def __init__(self, module: torch.nn.Module, call: CallFn, *, mode: str = "max-autotune-no-cudagraphs",
                 name: str = "model", on_cuda_stream: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"compile mode {mode!r}; choose one of {', '.join(MODES)}")
        self._module, self._call, self._mode, self._name = module, call, mode, name
        self._on_cuda_stream = on_cuda_stream
        self._compiled: Callable[..., Any] | None = None
        self._ready: set[tuple] = set()
        self._queued: set[tuple] = set()
        self._queue: list[tuple[tuple, tuple[torch.Tensor, ...]]] = []
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        #: why compiling failed (then every shape stays eager), None while it works
        self.failed: str | None = None
        #: "eager" or "compiled": which path served the last call
        self.last_path = "eager"
        self._closed = False

    # ------------------------------------------------------------------ calls
    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = _shape_key(inputs)
        if key in self._ready and self._compiled is not None:
            self.last_path = "compiled"
            return self._call(self._compiled, *inputs)
        self._request(key, inputs)
        self.last_path = "eager"
        return self._call(self._module, *inputs)

    def ready(self, *inputs: torch.Tensor) -> bool:
        """True when calls with these inputs' shapes run compiled."""
        return _shape_key(inputs) in self._ready

    @property
    def busy(self) -> bool:
        """True while a compile is queued or running."""
        return not self._idle.is_set()

    def settled(self, *inputs: torch.Tensor) -> bool:
        """True when these shapes will not change path any more (compiled, or compiling failed)."""
        return self.failed is not None or self.ready(*inputs)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing is being compiled (tests, benchmarks); False on timeout."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._queue.clear()

    # ------------------------------------------------------------------ the compile thread
    def _request(self, key: tuple, inputs: tuple[torch.Tensor, ...]) -> None:
        if self.failed is not None or self._closed:
            return
        with self._lock:
            if key in self._queued:
                return
            self._queued.add(key)
            # zeros of the same shape, dtype and device: the caller's tensors may be reused buffers
            self._queue.append((key, tuple(torch.zeros_like(t) for t in inputs)))
            self._idle.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=f"srunet-compile-{self._name}", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue or self._closed or self.failed is not None:
                    self._queue.clear()
                    self._thread = None
                    self._idle.set()
                    return
                key, example = self._queue.pop(0)
            try:
                self._compile_one(key, example)
            except Exception as e:  # compile error, OOM, missing toolchain: stay eager, say so once
                self.failed = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                log.warning("torch.compile of %s failed; staying on the eager path (%s)", self._name, self.failed)
                if example and example[0].is_cuda:
                    torch.cuda.empty_cache()

    def _compile_one(self, key: tuple, example: tuple[torch.Tensor, ...]) -> None:
        if self._compiled is None:
            use_inductor_cache()
            self._compiled = compile_module(self._module, self._mode)
        shape = "x".join(str(s) for s in key[0])
        log.info("compiling %s for %s in the background (eager meanwhile)", self._name, shape)
        if self._on_cuda_stream and example[0].is_cuda:
            # its own stream: the warm-up run does not queue behind (or in front of) live frames
            stream = torch.cuda.Stream(example[0].device)
            with torch.cuda.stream(stream):
                self._call(self._compiled, *example)
            stream.synchronize()
        else:
            self._call(self._compiled, *example)
        self._ready.add(key)
        log.info("compiled %s for %s: swapped in", self._name, shape)
