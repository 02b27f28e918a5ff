"""Streams as mpv users watch them, on 127.0.0.1 only: HLS and DASH served by a real nginx
(nginx-light, run unprivileged from a config in the test's temp folder; it honours Range
requests, as CDNs do), opened by the real mpv with the script, by the real ytdl_hook with
the real yt-dlp, and by ``mpv-srunet upscale``.

The fixtures are the shipped example clip re-encoded small (160x96) by ffmpeg: 72 frames
at 24 fps, keyframe every 24 frames, AAC. A tiny random model (F=16) keeps it light.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_mpv_helpers import MPV, REPO, decode_yuv, match_indices, mpv_cmd, run_mpv, srunet_env, wait_no_servers

from mpv_srunet.mpv import script_dir

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
FFMPEG = shutil.which("ffmpeg")
EXAMPLE = REPO / "examples" / "pan_540p_h265.mkv"
W, H, FRAMES, FPS = 160, 96, 72, 24
BACKEND = "onnxruntime"  # deterministic across processes

pytestmark = [
    pytest.mark.mpv,
    pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed"),
    pytest.mark.skipif(MPV is None, reason="mpv binary not installed (apt install mpv; ./install.sh --dev)"),
    pytest.mark.skipif(NGINX is None, reason="nginx not installed (apt install nginx-light; ./install.sh --dev)"),
    pytest.mark.timeout(300),
]


# ---------------------------------------------------------------------------- servers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx-light serving ``root`` on 127.0.0.1 (one process: ``master_process off``, so a kill ends it)."""

    def __init__(self, root: Path, run_dir: Path) -> None:
        self.root, self.run_dir = root, run_dir
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> Nginx:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):  # the free port may be taken between probe and bind: retry
            self.port = _free_port()
            conf = self.run_dir / "nginx.conf"
            d = self.run_dir
            conf.write_text(
                f"daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n"
                "worker_processes 1;\nevents { worker_connections 128; }\nhttp {\n"
                f"  access_log {d}/access.log;\n"
                + "".join(f"  {k}_temp_path {d}/tmp_{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
                + "  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; application/dash+xml mpd;"
                "  video/mp4 m4s mp4; }\n"
                f"  server {{ listen 127.0.0.1:{self.port}; root {self.root}; }}\n}}\n")
            self.proc = subprocess.Popen([NGINX, "-p", str(d), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"nginx did not start: {(self.run_dir / 'error.log').read_text()[-500:]}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _ffmpeg(*args: str, loops: int = 0) -> None:
    """The example clip at WxH (played ``loops`` extra times), with an AAC tone: HEVC, keyframe every 24 frames."""
    seconds = 3 * (loops + 1)
    subprocess.run([FFMPEG, "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(EXAMPLE), "-f", "lavfi", "-i",
                    f"sine=frequency=440:sample_rate=48000:duration={seconds}", "-vf", f"scale={W}:{H}",
                    "-c:v", "libx265", "-preset", "ultrafast",
                    "-x265-params", "keyint=24:min-keyint=24:scenecut=0:log-level=error",
                    "-c:a", "aac", "-shortest", "-map", "0:v", "-map", "1:a", *args],
                   check=True, timeout=120, capture_output=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """nginx serving a 3 s HEVC HLS VOD (2 s TS segments), a 12 s one, and a DASH manifest (separate
    audio and video adaptation sets)."""
    root = tmp_path_factory.mktemp("site")
    for name, loops in (("hls", 0), ("long", 3)):
        (root / name).mkdir()
        _ffmpeg("-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
                "-hls_segment_filename", str(root / name / "seg%d.ts"), str(root / name / "index.m3u8"), loops=loops)
    (root / "dash").mkdir()
    _ffmpeg("-f", "dash", "-seg_duration", "1", "-use_template", "1", "-use_timeline", "0",
            "-adaptation_sets", "id=0,streams=v id=1,streams=a", str(root / "dash" / "manifest.mpd"))
    server = Nginx(root, tmp_path_factory.mktemp("nginx")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def reference(site, tiny_weights, tmp_path_factory):
    """``mpv-srunet upscale`` of the HLS URL (ffv1, lossless): every route must show these frames."""
    out = tmp_path_factory.mktemp("ref") / "ref.mkv"
    res = _upscale(site.url("hls/index.m3u8"), out, tiny_weights)
    assert res.returncode == 0, res.stderr[-2000:]
    frames, types = decode_yuv(out)
    assert len(frames) == FRAMES and "audio" in types
    return frames


# ---------------------------------------------------------------------------- the frame source
def test_hls_frame_count_and_seeks_past_the_last_keyframe(site) -> None:
    """72 frames (not the playlist's 3.125 s); seeks the HLS demuxer cannot land still give the right frame."""
    from mpv_srunet.mpv.source import FrameSource, probe

    info = probe(site.url("hls/index.m3u8"))
    assert info.frames == FRAMES and info.seekable
    for k in (50, 69, 71, 12, FRAMES + 2):  # past the last keyframe, the end, backwards, past the end
        src = FrameSource(info)
        try:
            f = src.frame_at(k)
            assert abs(float(f.time) - info.start_time - min(k, FRAMES - 1) / FPS) < 0.5 / FPS, (k, f.time)
        finally:
            src.close()


# ---------------------------------------------------------------------------- mpv + the script
def _opts(tiny_weights: Path, **extra: str) -> dict[str, str]:
    return {"weights": str(tiny_weights), "backend": BACKEND, "policy": "wait", **extra}


def _encode(tmp_path: Path, url: str, tiny_weights: Path, *args: str, env: dict | None = None,
            **opts: str) -> tuple[Path, str]:
    out = tmp_path / "out.mkv"
    cmd = mpv_cmd(script_dir(), *args, "--o=" + str(out), "--ovc=ffv1", "--oac=pcm_s16le", url,
                  opts=_opts(tiny_weights, **opts))
    res, left = run_mpv(cmd, timeout=200, env=env)
    assert not left, f"frame server left running: {left}"
    assert res.returncode == 0, res.stdout[-3000:]
    return out, res.stdout


@pytest.mark.parametrize("start,first", [("2.9", 70), ("3", 71), ("1.5", 36)])
def test_lua_hls_start_lands_and_finishes(tmp_path, site, tiny_weights, reference, start, first) -> None:
    out, log = _encode(tmp_path, site.url("hls/index.m3u8"), tiny_weights, f"--start={start}")
    frames, types = decode_yuv(out)
    assert "upscaling 160x96 -> 320x192" in log, log[-3000:]
    assert frames[0].shape == (2 * H * 3 // 2, 2 * W)
    idx = match_indices(frames, reference)
    assert idx == list(range(first, FRAMES)), idx  # lands right, plays to the last frame, no repeats


def test_lua_hls_scripted_seeks_near_the_end(tmp_path, site, tiny_weights, reference) -> None:
    """An absolute seek past the last keyframe, then a relative one back: each lands on its frame.

    The seeker pauses before the first seek; once it has landed (``playback-restart``) it steps
    one frame and seeks back from there, then resumes: in encoding mode mpv does not wait for a
    script, so a seek triggered by an observed ``time-pos`` during playback can arrive after the
    end of a 3 s clip on a loaded machine. Paused, the order of events is the same at any speed."""
    seeker = tmp_path / "seeks.lua"
    seeker.write_text(
        'local step = 0\n'
        'mp.observe_property("time-pos", "number", function(_, t)\n'
        '  if not t then return end\n'
        '  if step == 0 and t >= 0.5 then step = 1\n'
        '    mp.set_property_bool("pause", true) mp.commandv("seek", "2.5", "absolute+exact")\n'
        '  elseif step == 2 and t > 2.52 then step = 3 mp.msg.warn("seeker: back from " .. t)\n'
        '    mp.commandv("seek", "-2", "relative+exact") mp.set_property_bool("pause", false) end\n'
        'end)\n'
        'mp.register_event("playback-restart", function()\n'
        '  if step ~= 1 then return end\n'
        '  step = 2 mp.msg.warn("seeker: landed at " .. mp.get_property("time-pos")) mp.command("frame-step")\n'
        'end)\n')
    out, log = _encode(tmp_path, site.url("hls/index.m3u8"), tiny_weights, f"--script={seeker}")
    assert "seeker: landed at 2.5" in log, log[-3000:]
    idx = match_indices(decode_yuv(out)[0], reference)
    jumps = [i for i in range(1, len(idx)) if idx[i] != idx[i - 1] + 1]
    assert len(jumps) == 2, (idx, log[-3000:])
    a, b = jumps
    assert abs(idx[a] - 60) <= 1, idx  # 2.5 s
    assert abs(idx[b] - 13) <= 1, idx  # 2 s back from the frame after 2.5 s
    assert idx[-1] == FRAMES - 1 and idx[b:] == list(range(idx[b], FRAMES)), idx


# ---------------------------------------------------------------------------- cut connections
def test_lua_hls_server_killed_mid_stream_plays_the_original(tmp_path, site, tiny_weights) -> None:
    """nginx dies while mpv plays the upscaled HLS: the script notices (log line) and falls back to the
    original at the current position; mpv then ends on its own (the original is gone too), no process left."""
    server = Nginx(site.root, tmp_path / "nginx").start()
    trigger, go = tmp_path / "trigger", tmp_path / "go"
    pauser = tmp_path / "pause_once.lua"
    pauser.write_text(  # pause early (the frame server has not reached the second segment), wait for the kill
        'local done = false\n'
        'mp.observe_property("time-pos", "number", function(_, t)\n'
        '  if done or not t or t < 0.2 then return end\n'
        '  done = true\n'
        '  mp.set_property_bool("pause", true)\n'
        f'  io.open("{trigger}", "w"):close()\n'
        '  local timer\n'
        '  timer = mp.add_periodic_timer(0.1, function()\n'
        f'    if io.open("{go}", "r") then timer:kill() mp.set_property_bool("pause", false) end\n'
        '  end)\n'
        'end)\n')
    cmd = mpv_cmd(script_dir(), "--vo=null", "--ao=null", f"--script={pauser}", server.url("long/index.m3u8"),
                  opts=_opts(tiny_weights))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=srunet_env(),
                            start_new_session=True)
    out_lines: list[str] = []
    reader = threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not trigger.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "".join(out_lines)[-3000:]
            time.sleep(0.05)
        server.stop()
        go.touch()
        proc.wait(90)  # bounded: rw_timeout and the script's monitor, not a frozen player
    finally:
        server.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        reader.join(10)
        left = wait_no_servers(proc.pid)
    log = "".join(out_lines)
    assert "playing the original: reading the source failed" in log, log[-3000:]
    assert not left, f"frame server left running: {left}"


# ---------------------------------------------------------------------------- yt-dlp / EDL
YTDLP = shutil.which("yt-dlp", path=str(Path(sys.executable).parent)) or shutil.which("yt-dlp")


@pytest.mark.skipif(YTDLP is None, reason="yt-dlp not installed (pip install -e .[test])")
@pytest.mark.slow
def test_lua_ytdl_dash_separate_audio_and_video_is_upscaled(tmp_path, site, tiny_weights, reference) -> None:
    """mpv's own ytdl_hook + the real yt-dlp on a DASH manifest give an EDL of two tracks
    (``!mp4_dash`` fragment lists): the video track is upscaled, the audio track plays beside it."""
    env = srunet_env()
    env["PATH"] = str(Path(YTDLP).parent) + os.pathsep + env.get("PATH", "")
    before = set(Path(tempfile.gettempdir()).glob("mpv-srunet-*/edl-*.m3u8"))
    out, log = _encode(tmp_path, "ytdl://" + site.url("dash/manifest.mpd"), tiny_weights, env=env)
    assert "upscaling 160x96 -> 320x192" in log and "(external)" in log, log[-3000:]  # audio: the EDL's track
    frames, types = decode_yuv(out)
    assert "audio" in types, log[-3000:]
    assert frames[0].shape == (2 * H * 3 // 2, 2 * W), log[-3000:]
    assert len(frames) == FRAMES
    assert match_indices(frames, reference) == list(range(FRAMES))
    left = set(Path(tempfile.gettempdir()).glob("mpv-srunet-*/edl-*.m3u8")) - before
    assert not left, f"generated playlists left behind: {left}"


def _upscale(src: str, out: Path, tiny_weights: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpv_srunet.cli", "upscale", src, str(out), "--codec", "ffv1",
                           "--weights", str(tiny_weights), "--backend", BACKEND, "--no-progress", *args],
                          env=srunet_env(), timeout=timeout, capture_output=True, text=True)


@pytest.mark.slow
def test_upscale_hls_server_killed_mid_stream_leaves_no_output(tmp_path, site, tiny_weights) -> None:
    """nginx dies after the first segments: ``upscale`` fails with one line and writes nothing (not a shorter file)."""
    server = Nginx(site.root, tmp_path / "nginx").start()
    out = tmp_path / "out.mkv"
    proc = subprocess.Popen([sys.executable, "-m", "mpv_srunet.cli", "upscale", server.url("long/index.m3u8"),
                             str(out), "--codec", "ffv1", "--weights", str(tiny_weights), "--backend", BACKEND,
                             "--no-progress"], env=srunet_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        log = server.run_dir / "access.log"
        deadline = time.monotonic() + 120
        while "seg1.ts" not in (log.read_text() if log.exists() else ""):  # the second segment is being read
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        server.stop()
        _, err = proc.communicate(timeout=120)
    finally:
        server.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode != 0, err[-2000:]
    assert "Traceback" not in err and "long/index.m3u8" in err.strip().splitlines()[-1], err[-2000:]
    assert not out.exists() and not list(tmp_path.glob(".out.mkv*")), list(tmp_path.iterdir())


class _Stalling(BaseHTTPRequestHandler):
    """Serves files with Range support; requests for ``stall`` hang (headers sent, no body) until released."""

    root: Path
    stall: str
    release: threading.Event

    def do_GET(self) -> None:
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end = 0, len(data)
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start, end = int(a or 0), (int(b) + 1 if b else len(data))
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if path.name == self.stall:
            self.release.wait(120)
            return
        try:
            self.wfile.write(data[start:end])
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *a) -> None:
        pass


def test_frame_source_on_a_stalled_connection_fails_in_bounded_time(site) -> None:
    """A server that stops sending mid-playlist: the frame source raises (the script then plays the
    original) instead of serving a frozen last frame for the rest of the video."""
    from mpv_srunet.errors import MediaError
    from mpv_srunet.mpv.source import FrameSource, probe

    handler = type("H", (_Stalling,), {"root": site.root, "stall": "seg2.ts", "release": threading.Event()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        info = probe(f"http://127.0.0.1:{httpd.server_address[1]}/long/index.m3u8")
        assert info.frames == 4 * FRAMES and info.seekable
        src = FrameSource(info)
        try:
            with pytest.raises(MediaError, match="reading failed"):
                for k in range(3 * FRAMES):  # the third segment (4-6 s) never arrives
                    src.frame_at(k)
            assert k >= 3 * FPS, k  # what came before the stalled segment was served (TS packets straddle it)
        finally:
            src.close()
    finally:
        handler.release.set()
        httpd.shutdown()
        httpd.server_close()


def _page(site: Nginx) -> str:
    """An HTML page with a <video> (what yt-dlp's generic extractor resolves)."""
    (site.root / "page.html").write_text(
        '<html><head><title>pan</title></head><body>'
        '<video controls src="/hls/index.m3u8" type="application/x-mpegURL"></video></body></html>')
    return site.url("page.html")


@pytest.mark.skipif(YTDLP is None, reason="yt-dlp not installed (pip install -e .[test])")
@pytest.mark.slow
def test_lua_web_page_resolved_by_ytdl_hook_is_upscaled(tmp_path, site, tiny_weights, reference) -> None:
    """A page URL FFmpeg cannot open: no error line from the script; mpv's ytdl_hook resolves it
    (on_load_fail) and the script upscales what it resolved to."""
    env = srunet_env()
    env["PATH"] = str(Path(YTDLP).parent) + os.pathsep + env.get("PATH", "")
    out, log = _encode(tmp_path, _page(site), tiny_weights, env=env)
    assert "upscaling 160x96 -> 320x192" in log and "off for this file" not in log, log[-3000:]
    frames, types = decode_yuv(out)
    assert "audio" in types and match_indices(frames, reference) == list(range(FRAMES))


@pytest.mark.skipif(YTDLP is None, reason="yt-dlp not installed (pip install -e .[test])")
@pytest.mark.slow
def test_play_command_web_page_and_ytdl_dash(tmp_path, site, tiny_weights, reference) -> None:
    """``mpv-srunet play`` (libmpv's own ytdl_hook): a page URL (resolved on load failure) and
    ``ytdl://`` DASH (separate audio and video, an EDL) both play upscaled with audio."""
    env = srunet_env()
    env["PATH"] = str(Path(YTDLP).parent) + os.pathsep + env.get("PATH", "")
    for i, url in enumerate((_page(site), "ytdl://" + site.url("dash/manifest.mpd"))):
        out = tmp_path / f"play{i}.mkv"
        res = subprocess.run([sys.executable, "-m", "mpv_srunet.cli", "play", url, "--no-config", "--weights",
                              str(tiny_weights), "--backend", BACKEND, "--mpv-opt", f"o={out}", "--mpv-opt", "ovc=ffv1",
                              "--mpv-opt", "oac=pcm_s16le"], env=env, capture_output=True, text=True, timeout=200)
        assert res.returncode == 0, res.stderr[-3000:]
        frames, types = decode_yuv(out)
        assert "audio" in types and match_indices(frames, reference) == list(range(FRAMES)), url


@pytest.mark.skipif(YTDLP is None, reason="yt-dlp not installed (pip install -e .[test])")
def test_upscale_a_web_page_through_yt_dlp(tmp_path, site, tiny_weights) -> None:
    """A page URL: yt-dlp's Python API finds the video, upscale upscales it."""
    page = _page(site)
    out = tmp_path / "out.mkv"
    res = _upscale(page, out, tiny_weights)
    assert res.returncode == 0, res.stderr[-2000:]
    frames, _ = decode_yuv(out)
    assert len(frames) == FRAMES and frames[0].shape == (2 * H * 3 // 2, 2 * W)


# ---------------------------------------------------------------------------- live
def _publish_live(site: Nginx, stop: threading.Event) -> None:
    """An EVENT playlist growing one segment (of the 3 s HLS) each time the player has reached the
    newest one, then closed with #EXT-X-ENDLIST: the player must treat it as live throughout."""
    src, live = site.root / "hls", site.root / "live"
    lines = (src / "index.m3u8").read_text().splitlines()
    segs = [(lines[i], lines[i + 1]) for i in range(len(lines)) if lines[i].startswith("#EXTINF")]
    head = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:0",
            "#EXT-X-PLAYLIST-TYPE:EVENT"]

    def write(n: int, end: bool) -> None:
        body = [x for inf, name in segs[:n] for x in (inf, name)]
        tmp = live / ".index.m3u8"
        tmp.write_text("\n".join(head + body + (["#EXT-X-ENDLIST"] if end else [])) + "\n")
        os.replace(tmp, live / "index.m3u8")

    for _, name in segs:
        shutil.copy(src / name, live / name)
    write(1, False)
    log = site.run_dir / "access.log"
    for n in range(2, len(segs) + 2):
        while not stop.is_set() and f"/live/{segs[n - 2][1]} " not in (log.read_text() if log.exists() else ""):
            time.sleep(0.05)
        if stop.wait(0.3):
            return
        write(min(n, len(segs)), n > len(segs))


def test_lua_live_hls_plays_upscaled_to_its_end(tmp_path, site, tiny_weights, reference) -> None:
    (site.root / "live").mkdir(exist_ok=True)
    stop = threading.Event()
    publisher = threading.Thread(target=_publish_live, args=(site, stop), daemon=True)
    publisher.start()
    try:
        out, log = _encode(tmp_path, site.url("live/index.m3u8"), tiny_weights)
    finally:
        stop.set()
        publisher.join(10)
    assert "upscaling 160x96 -> 320x192" in log, log[-3000:]
    frames, types = decode_yuv(out)
    assert "audio" in types and frames[0].shape == (2 * H * 3 // 2, 2 * W)
    # every frame, including the segment published while it played, exactly once and in order
    assert match_indices(frames, reference) == list(range(FRAMES))


@pytest.mark.skipif(YTDLP is None, reason="yt-dlp not installed (pip install -e .[test])")
def test_lua_dash_manifest_start_lands(tmp_path, site, tiny_weights, reference) -> None:
    """A DASH manifest opened directly (PyAV's FFmpeg has no DASH demuxer: yt-dlp's MPD parser lists the
    fragments): ``--start=2.5`` shows frame 60 on, with the manifest's audio."""
    out, log = _encode(tmp_path, site.url("dash/manifest.mpd"), tiny_weights, "--start=2.5")
    assert "upscaling 160x96 -> 320x192" in log, log[-3000:]
    frames, types = decode_yuv(out)
    assert "audio" in types
    assert match_indices(frames, reference) == list(range(60, FRAMES))


@pytest.mark.skipif(YTDLP is None, reason="yt-dlp not installed (pip install -e .[test])")
def test_upscale_dash_manifest_with_separate_audio(tmp_path, site, tiny_weights, reference) -> None:
    """``upscale`` of a DASH manifest (yt-dlp's MPD parser: separate video and audio): the upscaled video
    and the separate audio track end up in one file, every frame once."""
    out = tmp_path / "out.mkv"
    res = _upscale(site.url("dash/manifest.mpd"), out, tiny_weights)
    assert res.returncode == 0, res.stderr[-2000:]
    frames, types = decode_yuv(out)
    assert types.count("audio") == 1 and match_indices(frames, reference) == list(range(FRAMES))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mkv"]  # no temporary left beside it


@pytest.mark.skipif(YTDLP is None, reason="yt-dlp not installed (pip install -e .[test])")
def test_upscale_ytdl_format_is_respected(tmp_path, site, tiny_weights, reference) -> None:
    """``--ytdl-format`` picks the formats as mpv's ``ytdl-format`` does: ``bestvideo`` alone gives the
    upscaled video without the manifest's audio; a format the manifest lacks is one line, nothing written."""
    out = tmp_path / "video-only.mkv"
    res = _upscale(site.url("dash/manifest.mpd"), out, tiny_weights, "--ytdl-format", "bestvideo")
    assert res.returncode == 0, res.stderr[-2000:]
    frames, types = decode_yuv(out)
    assert "audio" not in types and match_indices(frames, reference) == list(range(FRAMES))
    bad = tmp_path / "bad.mkv"
    res = _upscale(site.url("dash/manifest.mpd"), bad, tiny_weights, "--ytdl-format", "bestvideo[height>=2000]")
    err = res.stderr.strip()
    assert res.returncode == 2 and "yt-dlp cannot resolve it" in err and len(err.splitlines()) == 1, err
    assert not bad.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["video-only.mkv"]
