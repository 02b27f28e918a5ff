"""`mpv-srunet play`: play videos/URLs in libmpv (python-mpv) with every frame upscaled in-process."""

from __future__ import annotations

import argparse

from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "play",
        help="play videos/URLs with SR-UNet in libmpv (your mpv config, OSC and keys)",
        description="Like mpv, but every frame goes through SR-UNet in this process. Keys: Alt+u toggle SR, "
        "Alt+c split-screen compare, Alt+i stats, Alt+= / Alt+- detail strength +-0.1 (rebind with "
        "'KEY script-message srunet toggle|compare|stats|strength-up|strength-down').",
    )
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_URL", help="files or http(s) URLs (a playlist)")
    options.add_weights(p, "weights file (default: sidecar VIDEO.srunet.safetensors, else the shipped weights)")
    options.add_backend(p)
    options.add_model(p, "model preset when no --weights: auto (default) = the best one that keeps real time for "
                      "the video by `mpv-srunet doctor`'s measurements, else default")
    options.add_strength(p, "detail strength 0 (fidelity) .. 1 (perceptual); Alt+= / Alt+- step it live "
                         "(default: the script's srunet-strength option, else the weights' own)")
    p.add_argument("--policy", choices=["auto", "wait"], default="auto",
                   help="filter slower than the video: auto = play the original, wait = play at the filter's pace")
    p.add_argument("--no-sidecar", action="store_true", help="ignore VIDEO.srunet.safetensors files")
    p.add_argument("--max-height", type=int, default=0, help="only upscale videos at most this tall (0: any)")
    p.add_argument("--compare", action="store_true", help="start in split-screen mode (left bicubic, right SR)")
    p.add_argument("--off", action="store_true", help="start with SR off (Alt+u turns it on)")
    p.add_argument("--no-config", action="store_true", help="do not load the user's mpv config")
    p.add_argument("--mpv-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="extra mpv option, repeatable (e.g. vo=null, o=out.mkv)")
    p.set_defaults(func=run)


def _mpv_options(items: list[str]) -> dict[str, str]:
    from ..errors import UsageError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--mpv-opt {item!r}: expected KEY=VALUE, e.g. --mpv-opt vo=null")
        out[key.strip().lstrip("-")] = value
    return out


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..mpv.player import PlayOptions, play_until_done

    if args.max_height < 0:
        raise UsageError(f"--max-height {args.max_height}: expected 0 or more")
    options.checked_strength(args)
    opts = PlayOptions(
        weights=args.weights, backend=args.backend, sidecar=not args.no_sidecar, policy=args.policy,
        max_height=args.max_height, compare=args.compare, enabled=not args.off,
        mpv_options=_mpv_options(args.mpv_opt), config=not args.no_config, strength=args.strength,
        model=args.model,
    )
    try:
        import mpv  # noqa: F401  (libmpv must load before anything else)
    except (ImportError, OSError) as e:
        raise UsageError(f"python-mpv/libmpv not usable ({e}); install libmpv (Debian: apt install libmpv2 or libmpv-dev)") from None
    return play_until_done(opts, list(args.inputs))
