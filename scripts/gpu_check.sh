#!/usr/bin/env bash
# GPU check of the official DyStream profile: random full-size weights (nothing downloaded), both inference
# modes, per-stage milliseconds (audio, generator, head, render, total; median over the frames) in fp32 and
# with the GPT + flow head in bfloat16 / float16 (wav2vec2 and the autoencoder stay fp32).
#
#   scripts/gpu_check.sh [SECONDS]        # default 4 s of espeak speech on both channels
#
# Needs a CUDA build of torch and a visible GPU; exits 2 without one. Prints the card first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f scripts/env.sh ] && [ -x .venv/bin/python ]; then
  # shellcheck disable=SC1091
  source scripts/env.sh --no-install
fi
SECONDS_AUDIO=${1:-4}
python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    print("gpu_check: no CUDA device visible to torch", torch.__version__, file=sys.stderr)
    sys.exit(2)
p = torch.cuda.get_device_properties(0)
print(f"gpu: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
for half in none bfloat16 float16; do
  echo "== official profile, random weights, cuda, GPT+head precision: ${half/none/fp32}"
  python -m dystream_ros.official.bench speed --random --device cuda --half "$half" --render \
    --seconds "$SECONDS_AUDIO" 2>&1 | grep '^{'
done
