"""Streams as mpv users open them: mpv's EDL (``edl://``), which mpv's ``ytdl_hook`` builds when
yt-dlp returns separate video and audio, and web pages that yt-dlp resolves.

An EDL names one or more tracks (``!new_stream``); each is a URL, a nested ``edl://``, or a
DASH fragment list (``!mp4_dash,init=URL;FRAGMENT,length=S;...``). FFmpeg cannot open an EDL,
so the video track is turned into something it can: its URL, or for a fragment list a
small HLS VOD playlist (``#EXT-X-MAP`` init section, one ``#EXTINF`` per fragment) in a
private temporary folder. The other tracks stay mpv URLs, for mpv to play beside the
upscaled video (``--audio-files`` / ``--sub-files``).

Only what can be upscaled faithfully is accepted: one segment per track (or one fragment
list); an EDL that cuts or concatenates clips is declined with a clear reason.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MediaError

log = logging.getLogger(__name__)

EDL_PREFIX = "edl://"
#: What a generated playlist may open: itself, and its fragments over http(s).
PLAYLIST_PROTOCOLS = "file,http,https,tcp,tls,crypto"
#: Headers and segments that change nothing about the video's frames.
_IGNORED_HEADERS = {"!no_clip", "!no_chapters", "!global_tags", "!track_meta", "!delay_open"}


@dataclass
class Entry:
    """One EDL line: a header (``!name``) or a segment (its file first), with its named parameters."""

    head: str
    params: dict[str, str] = field(default_factory=dict)


def parse_edl(text: str) -> list[list[Entry]]:
    """The tracks of an EDL (mpv's syntax, ``%N%`` length-quoted values included), split at ``!new_stream``."""
    if text.startswith(EDL_PREFIX):
        text = text[len(EDL_PREFIX):]
    elif text.startswith("# mpv EDL v0\n"):
        text = text.split("\n", 1)[1]
    entries: list[Entry] = []
    i, n = 0, len(text)
    while i < n:
        values: list[tuple[str | None, str]] = []
        while True:  # the parameters of one entry, separated by ","
            name = None
            m = re.match(r"([^=%,;\n]*)=", text[i:])
            if m:
                name, i = m[1], i + m.end()
            q = re.match(r"%(\d+)%", text[i:])
            if q:
                start = i + q.end()
                value, i = text[start:start + int(q[1])], start + int(q[1])
                if len(value) != int(q[1]):
                    raise MediaError(f"EDL: a quoted value runs past the end ({text[max(0, i - 40):i]!r})")
            else:
                m2 = re.match(r"[^,;\n]*", text[i:])
                value, i = m2[0], i + m2.end()
            values.append((name, value))
            if i < n and text[i] == ",":
                i += 1
                continue
            i += 1  # ";" or "\n" (or the end)
            break
        if not values or values == [(None, "")]:
            continue
        (first_name, head), rest = values[0], values[1:]
        if first_name is not None:  # "file=..." as the first parameter
            rest, head = values, ""
        entries.append(Entry(head, {k or f"#{j}": v for j, (k, v) in enumerate(rest)}))
    tracks: list[list[Entry]] = [[]]
    for e in entries:
        if e.head == "!new_stream":
            if tracks[-1]:
                tracks.append([])
        else:
            tracks[-1].append(e)
    return [t for t in tracks if t]


def _quote(s: str) -> str:
    return f"%{len(s)}%{s}"


def format_edl(track: list[Entry]) -> str:
    """One track as a standalone ``edl://`` URL mpv can open (e.g. as an audio file)."""
    lines = []
    for e in track:
        parts = [_quote(e.head) if not e.head.startswith("!") else e.head]
        parts += [f"{k}={_quote(v)}" if not k.startswith("#") else _quote(v) for k, v in e.params.items()]
        lines.append(",".join(parts))
    return EDL_PREFIX + ";".join(lines)


@dataclass
class Track:
    """One EDL track: what mpv opens (``mpv_url``) and what FFmpeg opens (``url`` + ``options``)."""

    mpv_url: str
    url: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class ResolvedSource:
    """The upscaled video's source and the tracks mpv plays beside it."""

    video: Track
    audio: list[str] = field(default_factory=list)
    subs: list[str] = field(default_factory=list)
    title: str | None = None
    made: list[Path] = field(default_factory=list)  # generated playlists (and their folder); close() removes them
    #: the audio tracks apart from the video's file, as FFmpeg opens them (``upscale`` muxes them in)
    separate_audio: list[Track] = field(default_factory=list)

    def close(self) -> None:
        _remove(self.made)


def _remove(made: list[Path]) -> None:
    for p in reversed(made):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    made.clear()


def _dash_playlist(init: str, fragments: list[Entry], made: list[Path], parent: str | None) -> Path:
    """An HLS VOD media playlist FFmpeg can open and seek in: the init section, then each fragment."""
    lengths = []
    for f in fragments:
        try:
            lengths.append(float(f.params["length"]))
        except (KeyError, ValueError):
            raise MediaError("EDL: a DASH fragment without a length; cannot map it to time") from None
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{max(1, math.ceil(max(lengths)))}",
             "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-MEDIA-SEQUENCE:0", f'#EXT-X-MAP:URI="{init}"']
    for f, length in zip(fragments, lengths):
        lines += [f"#EXTINF:{length:.6f},", f.head]
    lines.append("#EXT-X-ENDLIST")
    path = _new_file(made, parent)
    path.write_text("\n".join(lines) + "\n")
    return path


def _new_file(made: list[Path], parent: str | None) -> Path:
    """A new playlist file: in ``parent`` (the frame server's control folder, which goes with the server),
    else in a private temporary folder; recorded in ``made``."""
    if parent is None and not made:
        made.append(Path(tempfile.mkdtemp(prefix="mpv-srunet-edl-")))
    fd, path = tempfile.mkstemp(prefix="edl-", suffix=".m3u8", dir=parent if parent is not None else made[0])
    os.close(fd)
    made.append(Path(path))
    return Path(path)


def _track(track: list[Entry], made: list[Path], parent: str | None = None) -> Track:
    headers = {e.head: e for e in track if e.head.startswith("!")}
    segments = [e for e in track if not e.head.startswith("!")]
    unknown = set(headers) - _IGNORED_HEADERS - {"!mp4_dash"}
    if unknown:
        raise MediaError(f"EDL: {', '.join(sorted(unknown))} is not supported for upscaling")
    mpv_url = format_edl(track)
    if "!mp4_dash" in headers:
        init = headers["!mp4_dash"].params.get("init")
        if not init or not segments:
            raise MediaError("EDL: !mp4_dash without an init segment or fragments")
        path = _dash_playlist(init, segments, made, parent)
        return Track(mpv_url, str(path), {"protocol_whitelist": PLAYLIST_PROTOCOLS})
    if len(segments) != 1:
        raise MediaError(f"EDL: a track of {len(segments)} clips; only single-source tracks can be upscaled")
    seg = segments[0]
    clipped = "!no_clip" not in headers and ("start" in seg.params or "length" in seg.params)
    if clipped:
        raise MediaError("EDL: clipped segments (start=/length=) are not supported for upscaling")
    if seg.head.startswith(EDL_PREFIX):
        inner = parse_edl(seg.head)
        if len(inner) != 1:
            raise MediaError("EDL: a nested EDL with several tracks is not supported")
        t = _track(inner[0], made, parent)
        return Track(seg.head, t.url, t.options)
    return Track(seg.head if len(track) == 1 else mpv_url, seg.head)


def _stream_types(track: Track) -> set[str]:
    from .mpv.source import open_container

    with open_container(track.url, track.options) as c:
        return {s.type for s in c.streams}


def resolve_edl(url: str, workdir: str | None = None) -> ResolvedSource:
    """The video track of an EDL (the first with video) and its other tracks. MediaError if unsupported.

    Generated playlists go into ``workdir`` (default: a new private temporary folder)."""
    made: list[Path] = []
    try:
        tracks = [_track(t, made, workdir) for t in parse_edl(url)]
        if not tracks:
            raise MediaError("EDL: no tracks")
        video, audio, subs, separate = None, [], [], []
        for t in tracks:
            types = _stream_types(t) if len(tracks) > 1 else {"video"}
            if "video" in types and video is None:
                video = t
                if "audio" in types:  # the video file's own sound, as mpv would play it
                    audio.append(t.mpv_url)
            elif "audio" in types:
                audio.append(t.mpv_url)
                separate.append(t)
            elif "subtitle" in types:
                subs.append(t.mpv_url)
        if video is None:
            raise MediaError("EDL: no track has video")
        return ResolvedSource(video, audio, subs, made=made, separate_audio=separate)
    except BaseException:
        _remove(made)
        raise


# ---------------------------------------------------------------------------- yt-dlp
YTDL_HINT = "install yt-dlp (pip install yt-dlp) to open web pages"


def resolve_page(url: str, ytdl_format: str | None = None, workdir: str | None = None) -> ResolvedSource:
    """A web page's video and audio via yt-dlp's Python API (the format mpv's ``ytdl-format`` names)."""
    try:
        import yt_dlp
    except ImportError:
        raise MediaError(f"{url}: not a video FFmpeg can open; {YTDL_HINT}") from None
    opts: dict[str, Any] = {"quiet": True, "no_warnings": True, "noplaylist": True, "skip_download": True,
                            "format": ytdl_format or "bestvideo+bestaudio/best", "logger": _YtdlLog()}
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=False)
    except Exception as e:  # yt_dlp.utils.DownloadError and friends: one line
        raise MediaError(f"{url}: yt-dlp cannot resolve it ({str(e).splitlines()[0][:200]})") from None
    formats = info.get("requested_formats") or [info]
    video = next((f for f in formats if f.get("vcodec") not in (None, "none")), None) or next(
        (f for f in formats if f.get("vcodec") != "none"), None)  # None: unknown (e.g. HLS without CODECS)
    if video is None:
        raise MediaError(f"{url}: yt-dlp found no video format")
    made: list[Path] = []
    try:
        track = _format_track(video, made, workdir)
        separate = [_format_track(f, made, workdir) for f in formats
                    if f is not video and f.get("acodec") not in (None, "none")]
        audio = ([track.mpv_url] if video.get("acodec") != "none" else []) + [t.mpv_url for t in separate]
        return ResolvedSource(track, audio, title=info.get("title"), made=made, separate_audio=separate)
    except BaseException:
        _remove(made)
        raise


class _YtdlLog:
    """yt-dlp's messages go to our log (its errors also come back as the exception we turn into one
    line; without a logger yt-dlp prints them on stderr itself, even when quiet)."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = debug

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    error = warning


def _format_track(f: dict[str, Any], made: list[Path], workdir: str | None = None) -> Track:
    """A yt-dlp format as FFmpeg opens it: its URL, or its DASH fragments as a playlist."""
    headers = "".join(f"{k}: {v}\r\n" for k, v in (f.get("http_headers") or {}).items())
    options = {"headers": headers} if headers else {}
    if f.get("protocol") == "http_dash_segments" and f.get("fragments"):
        base = f.get("fragment_base_url") or ""
        frags = [Entry(fr.get("url") or (base + fr["path"]), {"length": str(fr.get("duration") or 0)})
                 for fr in f["fragments"]]
        init, rest = (frags[0].head, frags[1:]) if "duration" not in f["fragments"][0] else (None, frags)
        if init is None or any(float(e.params["length"]) <= 0 for e in rest):
            raise MediaError("yt-dlp: DASH fragments without an init segment or durations")
        path = _dash_playlist(init, rest, made, workdir)
        return Track(str(path), str(path), {"protocol_whitelist": PLAYLIST_PROTOCOLS, **options})
    return Track(f["url"], f["url"], options)
