#!/usr/bin/env bash
# Build .whl/ (git-ignored) with the wheels bench/gpu_wheels.txt lists, for the device machine's
# Python 3.12 on x86_64: binary wheels where the registry has them, else a wheel built here from the
# sdist (pure Python: efficientnet-pytorch). Run once in the repo root before bench/gpu_session.sh is
# sent to a GPU machine with carry [".whl"]:  bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
grep -v '^#' bench/gpu_wheels.txt | grep . | while read -r req; do
  if ! "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
       "${platforms[@]}" -d .whl "$req"; then
    echo "no binary wheel of $req: building one from its sdist"
    "$PYTHON" -m pip wheel -q --no-deps -w .whl "$req"
  fi
done
ls -l .whl
du -sh .whl
