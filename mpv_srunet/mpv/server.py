"""Loopback HTTP frame server for the mpv Lua script (``python -m mpv_srunet.mpv.server``).

Why HTTP: Debian's mpv has no VapourSynth filter, but it plays a y4m file over
HTTP with frame-exact seeks (each seek outside its cache is a ``Range`` request).
The Lua script starts one server per mpv process and talks to it through a
private control directory (mode 0700, created here and announced in the
``--ready-file``):

* the script writes ``req-N.json`` (``{"op": "register", "source": ...}``,
  ``{"op": "close", "media": ...}`` or ``{"op": "strength", "value": 0.7}``); the
  server answers in ``resp-N.json``. ``strength`` re-blends the detail-strength
  endpoints of the weights in use and swaps them between two frames (no reload);
  frames rendered after the swap show it;
* the server keeps ``stats-<media>.json`` up to date for the OSD and the
  real-time policy.

Security: the socket is bound to 127.0.0.1 only; every URL carries a random
per-session secret (compared in constant time); a URL names a registered media id
and a variant, never a path, so nothing but registered media can be read.

Lifetime: the server exits with its mpv: Linux's parent-death signal, a watchdog
on the parent pid and mpv's own pid, and the script's shutdown handler; the
script starts it as an mpv subprocess, so mpv reaps it (no zombie).
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..errors import SRUNetError
from ..signals import exit_signals
from .media import Media, UpscalerPool, open_media
from .render import VARIANTS, Cancelled

log = logging.getLogger("mpv_srunet.server")

_PATH_RE = re.compile(r"^/([A-Za-z0-9_-]{16,64})/([a-z0-9]{1,16})/([a-z]+)\.y4m$")
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
POLL_S = 0.02
STATS_EVERY_S = 0.25


#: Held by every write into the control directory and by the exit path, so that the
#: directory is never removed while a file is being written into it.
_WRITE_LOCK = threading.Lock()
_EXITING = False


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON readable by the owner only, renamed into place (the reader never sees half a file)."""
    with _WRITE_LOCK:
        if _EXITING:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)


class FrameServer:
    """Registry of media + HTTP server + control-directory loop."""

    def __init__(self, control_dir: Path, *, backend: str = "auto", weights: str | None = None,
                 strength: float | None = None) -> None:
        self.control_dir = control_dir
        self.backend, self.weights = backend, weights
        self.secret = secrets.token_urlsafe(24)
        self.pool = UpscalerPool(strength)
        self.media: dict[str, Media] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.frame_server = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]

    def url(self, media_id: str, variant: str) -> str:
        return f"http://127.0.0.1:{self.port}/{self.secret}/{media_id}/{variant}.y4m"

    def lookup(self, path: str) -> tuple[Media, str] | int:
        """Media and variant for a request path, or the HTTP status to answer."""
        m = _PATH_RE.match(path)
        if not m or not hmac.compare_digest(m[1].encode(), self.secret.encode()):
            return 403
        media = self.media.get(m[2])
        if media is None or m[3] not in VARIANTS:
            return 404
        return media, m[3]

    # ------------------------------------------------------------------ control requests
    def register(self, req: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            media_id = str(self._next_id)
            self._next_id += 1
        if req.get("strength") is not None and req["strength"] != self.pool.strength:
            self.pool.set_strength(req["strength"])
        media, ms = open_media(
            media_id, str(req["source"]), self.pool, weights=req.get("weights") or self.weights,
            backend=req.get("backend") or self.backend, use_sidecar=bool(req.get("sidecar", True)),
            workdir=str(self.control_dir), model=str(req.get("model") or "default"),
        )
        self.media[media_id] = media
        return {"ok": True, **media.describe(), "ms_per_frame": round(ms, 2),
                "urls": {v: self.url(media_id, v) for v in VARIANTS}}

    def set_strength(self, value: Any) -> dict[str, Any]:
        """Re-blend the weights in use at ``value`` (0..1); ``changed`` 0 = single-endpoint weights."""
        changed = self.pool.set_strength(value)
        return {"ok": True, "strength": self.pool.strength, "changed": changed}

    def close_media(self, media_id: str) -> dict[str, Any]:
        media = self.media.pop(media_id, None)
        if media is not None:
            media.close()
        return {"ok": True}

    def handle_request_file(self, path: Path) -> None:
        n = path.name[len("req-"):-len(".json")]
        try:
            req = json.loads(path.read_text())
            path.unlink()
        except (OSError, ValueError) as e:
            log.error("bad request file %s: %s", path.name, e)
            return
        try:
            op = req.get("op")
            if op == "register":
                resp = self.register(req)
            elif op == "close":
                resp = self.close_media(str(req.get("media")))
            elif op == "strength":
                resp = self.set_strength(req.get("value"))
            else:
                resp = {"ok": False, "error": f"unknown op {op!r}"}
        except SRUNetError as e:
            resp = {"ok": False, "error": str(e)}
        except Exception as e:  # report any failure to the script; it falls back to the original
            log.exception("request %s failed", n)
            resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        write_json_atomic(self.control_dir / f"resp-{n}.json", resp)

    def control_loop(self) -> None:
        """Poll the control directory for requests; publish stats."""
        busy: set[str] = set()
        last_stats = 0.0
        while True:
            for p in sorted(self.control_dir.glob("req-*.json")):
                if p.name not in busy:  # registrations can take seconds: one thread each
                    busy.add(p.name)
                    threading.Thread(target=self._run_request, args=(p, busy), daemon=True).start()
            if time.monotonic() - last_stats > STATS_EVERY_S:
                last_stats = time.monotonic()
                for media in list(self.media.values()):
                    write_json_atomic(self.control_dir / f"stats-{media.id}.json", media.stats_dict())
            time.sleep(POLL_S)

    def _run_request(self, path: Path, busy: set[str]) -> None:
        try:
            self.handle_request_file(path)
        finally:
            busy.discard(path.name)


class _Handler(BaseHTTPRequestHandler):
    server_version = "mpv-srunet"
    protocol_version = "HTTP/1.0"  # one response per connection: mpv opens a new one per seek

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    @property
    def fs(self) -> FrameServer:
        return self.server.frame_server  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _range(self, size: int | None) -> tuple[int, int | None] | None:
        """(start, end exclusive) from the Range header; None if unsatisfiable."""
        h = self.headers.get("Range")
        if not h or size is None:
            return 0, size
        m = _RANGE_RE.match(h.strip())
        if not m:
            return None
        start = int(m[1])
        end = min(size, int(m[2]) + 1) if m[2] else size
        return (start, end) if start < size and start < end else None

    def _serve(self, body: bool) -> None:
        found = self.fs.lookup(self.path)
        if isinstance(found, int):
            self.send_error(found)
            return
        media, variant = found
        size = media.layout.size
        rng = self._range(size)
        if rng is None:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        start, end = rng
        self._send_headers(size, start, end)
        if body:
            self._stream(media, variant, start, end)

    def _send_headers(self, size: int | None, start: int, end: int | None) -> None:
        partial = size is not None and self.headers.get("Range") is not None
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", "video/x-yuv4mpeg")
        if size is not None:
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def _stream(self, media: Media, variant: str, start: int, end: int | None) -> None:
        """Send frames until done, the client leaves, or a newer request for this variant replaces us."""
        media.generation[variant] += 1
        gen = media.generation[variant]

        def replaced() -> bool:
            return media.generation[variant] != gen

        try:
            for chunk in media.chunks(variant, start, end, replaced):
                if replaced():
                    return
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError, Cancelled):
            return
        except Exception as e:  # decode error etc.: end the response; the script falls back
            log.error("serving %s/%s from byte %d: %s: %s", media.id, variant, start, type(e).__name__, e)


# ---------------------------------------------------------------------- lifetime
def _set_parent_death_signal() -> None:
    """Linux: get SIGTERM when the parent (mpv's subprocess thread) dies, even after kill -9."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


def _ignores_hangup(pid: int) -> bool:
    """Linux: whether process ``pid`` ignores SIGHUP (an mpv started with nohup). mpv starts its
    subprocesses with every signal at its default, so the server asks mpv's /proc entry instead."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGHUP - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watchdog(parent: int, mpv_pid: int | None, control_dir: Path) -> None:
    """Exit when the parent or mpv is gone, or when the script asks (``quit`` file)."""
    while True:
        gone = os.getppid() != parent or (mpv_pid is not None and not _pid_alive(mpv_pid))
        if gone or (control_dir / "quit").exists():
            _exit(control_dir, 0)
        time.sleep(0.25)


_READY_FILE: Path | None = None  # removed at exit too, in case mpv died before reading it


def _exit(control_dir: Path, code: int) -> None:
    global _EXITING
    if _WRITE_LOCK.acquire(timeout=2.0):
        _EXITING = True
    shutil.rmtree(control_dir, ignore_errors=True)
    if _READY_FILE is not None:
        _READY_FILE.unlink(missing_ok=True)
    logging.shutdown()
    os._exit(code)  # no waiting on render threads blocked in the model or a socket


CONTROL_PREFIX = "mpv-srunet-"


#: A control directory without ``server.pid`` older than this is a leftover: the script removed its
#: files at mpv's shutdown while the server (killed by mpv right after) wrote a last response.
ORPHAN_AGE_S = 60.0


def sweep_stale_control_dirs() -> None:
    """Remove control directories of servers that were killed before cleaning up (SIGKILL)."""
    for d in Path(tempfile.gettempdir()).glob(CONTROL_PREFIX + "*"):
        try:
            st = d.stat()
            if st.st_uid != os.getuid():
                continue
            pid = int((d / "server.pid").read_text())
        except FileNotFoundError:
            if d.is_dir() and time.time() - st.st_mtime > ORPHAN_AGE_S:
                shutil.rmtree(d, ignore_errors=True)
            continue
        except (OSError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mpv_srunet.mpv.server", description=__doc__.split("\n")[0])
    p.add_argument("--ready-file", required=True, help="where to write {port, secret, control_dir} once listening")
    p.add_argument("--mpv-pid", type=int, default=None, help="exit when this process is gone")
    p.add_argument("--backend", default="auto")
    p.add_argument("--weights", default=None)
    p.add_argument("--strength", type=float, default=None, help="detail strength 0..1 (default: the weights' own)")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    global _READY_FILE
    args = parse_args(argv)
    _READY_FILE = Path(args.ready_file)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="srunet-server %(levelname)s: %(message)s", stream=sys.stderr)
    parent = os.getppid()
    _set_parent_death_signal()
    sweep_stale_control_dirs()
    control_dir = Path(tempfile.mkdtemp(prefix=CONTROL_PREFIX))
    (control_dir / "server.pid").write_text(str(os.getpid()))
    if args.mpv_pid is not None and _ignores_hangup(args.mpv_pid):  # mpv under nohup: so is its server
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for sig in exit_signals():  # 130, 143, 129 (SIGHUP stays ignored under nohup); control dir removed
        signal.signal(sig, lambda signum, _frame: _exit(control_dir, 128 + signum))
    server = FrameServer(control_dir, backend=args.backend, weights=args.weights, strength=args.strength)
    threading.Thread(target=_watchdog, args=(parent, args.mpv_pid, control_dir), daemon=True).start()
    threading.Thread(target=server.httpd.serve_forever, daemon=True).start()
    write_json_atomic(Path(args.ready_file), {
        "port": server.port, "secret": server.secret, "control_dir": str(control_dir), "pid": os.getpid(),
    })
    log.info("listening on 127.0.0.1:%d, control dir %s", server.port, control_dir)
    try:
        server.control_loop()
    finally:
        _exit(control_dir, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
