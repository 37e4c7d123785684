#!/bin/bash
# MovieLens ml-latest-small (2016-10) from the lenskit 2025.8.1 sdist (GroupLens terms: research use, cite Harper & Konstan 2015).
# usage: bash lab/fetch_ml_latest_small.sh DEST   then   metarec train --dataset DEST ...
# ml-latest-small (2016-10 edition: 671 users, 9,066 rated movies of 9,125, 100,004 ratings, 1995-01-09..2016-10-16)
# from the lenskit 2025.8.1 sdist's data/ml-latest-small/. Nothing is installed.
# The sdist's build backend is maturin (Rust; needs crates.io, unreachable), and `pip download` of an sdist always
# asks the backend for metadata, so a throwaway stand-in backend answers that one question.
set -euo pipefail
DEST=${1:-$HOME/.cache/metarec/ml-latest-small}
PY=${PYTHON:-python3}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/shim"
cat > "$TMP/shim/maturin.py" <<'PYEOF'
import os
def prepare_metadata_for_build_wheel(d, config_settings=None):
    n = "lenskit-2025.8.1.dist-info"; os.makedirs(os.path.join(d, n), exist_ok=True)
    with open(os.path.join(d, n, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: lenskit\nVersion: 2025.8.1\n")
    return n
def build_wheel(*a, **k): raise RuntimeError("metadata-only stand-in")
PYEOF
PYTHONPATH="$TMP/shim" "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -q \
    lenskit==2025.8.1 -d "$TMP"
SD="$TMP/lenskit-2025.8.1.tar.gz"
echo "954b22a81e8a0d2012a173340079aa3d0c68dcc8cb9954e488fc228d77d4cb55  $SD" | sha256sum -c --quiet
mkdir -p "$DEST"
tar xzf "$SD" -C "$DEST" --strip-components=3 lenskit-2025.8.1/data/ml-latest-small
echo "ml-latest-small written to $DEST: $(ls "$DEST")"
