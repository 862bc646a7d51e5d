#!/usr/bin/env bash
# Build the wheelhouse the GPU check carries: the server's pure-Python (and cp312 manylinux)
# dependencies that the GPU machine's image lacks, plus the transformers / sentence-transformers
# versions the CPU suite is validated with and the flax that pip pairs with jax 0.11.2 (the
# image's jax), as Python 3.12 x86-64 wheels in ./.whl (git-ignored).
# Run it here, in the repository root of the checkout the device tool sends, before the `run`
# call (bench/README.md, "GPU check"). Nothing is installed here.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
DEST=.whl
# One version of each (two versions of one package stop the install there).
PACKAGES=(
  flask==3.1.3 werkzeug==3.1.8 itsdangerous==2.2.0 blinker==1.9.0 flask-cors==6.0.2
  gunicorn==27.0.1 swagger-ui-bundle==1.1.0
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
  typing-extensions==4.16.0 orjson==3.13.0 regex==2026.5.9
  transformers==5.24.0 sentence-transformers==6.2.0 flax==0.12.12
)
rm -rf "$DEST" && mkdir -p "$DEST"
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$tag")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${PACKAGES[@]}"
ls -1 "$DEST"
du -sh "$DEST"
