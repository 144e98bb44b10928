#!/usr/bin/env bash
# upgrade.sh of the core package: a thin wrapper that runs `ferry sync` on this package with
# the same arguments, so runbooks keep working:
#   bash upgrade.sh --only-sync-image=true [--registry R --username U --password P]
#   bash upgrade.sh --skip-sync-image
#   bash upgrade.sh --preflight
# ferry is looked up as $FERRY, else next to this script, else on PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ferry="${FERRY:-}"
if [ -z "$ferry" ]; then
  if [ -x "$here/ferry" ]; then ferry="$here/ferry"; else ferry=ferry; fi
fi
exec "$ferry" sync --package "$here" "$@"
