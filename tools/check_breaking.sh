#!/usr/bin/env bash
# The public API's breaking-change check, kept in one place: `make lint` and tests/unit/test_api_breaking.py run it.
#   tools/check_breaking.sh [ROOT]   check ROOT's public package (default: this repo) against the committed baseline
#   tools/check_breaking.sh --refresh   rewrite the baseline; only in a change that adds an ADR recording the break
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASELINE="$REPO/proto/baseline/llmorch-v1.binpb"
# Only the public package is a promise to users; llmorch.internal.v1 changes together with its callers. The
# baseline holds only the public files, and the internal ones are excluded from the input too. (`--path` cannot
# do this: it names input paths, proto/llmorch/v1, while the image's files are module-relative, llmorch/v1.)
if [[ "${1:-}" == --refresh ]]; then
  cd "$REPO"
  exec buf build --path proto/llmorch/v1 -o "$BASELINE"
fi
cd "${1:-$REPO}"
exec buf breaking --against "$BASELINE" --exclude-path proto/llmorch/internal
