"""mpv EDL parsing (mpv_srunet.streams): the syntax mpv's ytdl_hook writes, and what is declined."""

from __future__ import annotations

import pytest
from conftest import make_h265_clip

from mpv_srunet.errors import MediaError
from mpv_srunet.streams import format_edl, parse_edl, resolve_edl

# what mpv 0.35's ytdl_hook made of yt-dlp's separate DASH audio and video (tests/test_streams.py)
INIT_A, INIT_V = "http://127.0.0.1:1/dash/init-stream1.m4s", "http://127.0.0.1:1/dash/init-stream0.m4s"


def _dash(init: str, stream: int) -> str:
    frags = "".join(f"%{len(u)}%{u},length=1;" for u in
                    (f"http://127.0.0.1:1/dash/chunk-stream{stream}-0000{i}.m4s" for i in (1, 2)))
    return f"edl://!mp4_dash,init=%{len(init)}%{init};{frags}"


YTDL_EDL = "edl://" + ";".join(
    f"!new_stream;!no_clip;!no_chapters;%{len(d)}%{d}" for d in (_dash(INIT_A, 1), _dash(INIT_V, 0)))


def test_parse_ytdl_hook_edl() -> None:
    tracks = parse_edl(YTDL_EDL)
    assert len(tracks) == 2
    heads = [[e.head for e in t] for t in tracks]
    assert heads[0][:2] == ["!no_clip", "!no_chapters"] and heads[0][2] == _dash(INIT_A, 1)
    inner = parse_edl(heads[1][2])[0]
    assert inner[0].head == "!mp4_dash" and inner[0].params == {"init": INIT_V}
    assert [e.params for e in inner[1:]] == [{"length": "1"}, {"length": "1"}]
    assert inner[1].head.endswith("chunk-stream0-00001.m4s")
    for t in tracks:  # a track written back parses to the same entries
        assert parse_edl(format_edl(t)) == [t]


def test_quoted_values_keep_separators() -> None:
    url = "http://h/a,b;c=d.mp4"
    (track,) = parse_edl(f"edl://%{len(url)}%{url},title=%3%x;y")
    assert track[0].head == url and track[0].params == {"title": "x;y"}
    with pytest.raises(MediaError, match="runs past the end"):
        parse_edl("edl://%99%short")


@pytest.mark.parametrize("edl,why", [
    ("edl://a.mkv,start=1,length=2", "clipped"),
    ("edl://a.mkv;b.mkv", "2 clips"),
    ("edl://!mp4_dash,init=%5%i.mp4;f1.m4s", "without a length"),
    ("edl://!some_new_header;a.mkv", "not supported"),
])
def test_declined_edls(edl: str, why: str) -> None:
    with pytest.raises(MediaError, match=why):
        resolve_edl(edl)


def test_resolve_two_local_tracks(tmp_path) -> None:
    """The first track with video is upscaled; every other track's sound plays beside it."""
    video = make_h265_clip(tmp_path / "v.mkv", 64, 48, frames=2, audio=False)
    audio = make_h265_clip(tmp_path / "a.mkv", 64, 48, frames=2, audio=True)
    r = resolve_edl(f"edl://!new_stream;%{len(str(video))}%{video};!new_stream;%{len(str(audio))}%{audio}")
    try:
        assert r.video.url == str(video) and r.made == []
        assert len(r.audio) == 1 and parse_edl(r.audio[0])[0][0].head == str(audio)
    finally:
        r.close()
