#!/usr/bin/env bash
# Runs every test of chatlake on a fresh machine: installs what the tests need (a Python
# virtual environment with duckdb, polars, pyarrow, scipy and statsmodels; cargo-nextest
# if missing), then fmt, clippy and the whole test suite with nextest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse a target dir outside the clone when one exists (CI caches it).
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/chatlake-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/chatlake-target"
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import duckdb, polars, pyarrow, scipy, statsmodels" 2>/dev/null; then
  echo "==> creating .venv with duckdb, polars, pyarrow, scipy, statsmodels"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check duckdb polars pyarrow scipy statsmodels
fi
export CHATLAKE_PYTHON="$PWD/.venv/bin/python"

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests"
# Doc tests first, so that nextest's summary of the whole suite is the last line.
cargo test --workspace --doc --locked </dev/null
cargo nextest run --workspace --all-targets --locked --no-fail-fast </dev/null
