#!/usr/bin/env bash
# Sets up and runs a Nuvem host: installs packages, builds, starts xapid in the foreground
# on an embedded default (temp state dir, SQLite DB) and prints its URL and credentials.
# Stop it with Ctrl-C. NUVEM_STATE_DIR and NUVEM_LISTEN override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh release
state=${NUVEM_STATE_DIR:-$(mktemp -d /tmp/nuvem-host.XXXXXX)}
listen=${NUVEM_LISTEN:-127.0.0.1:8080}
tls_listen=${NUVEM_TLS_LISTEN:-127.0.0.1:8443}
echo "Nuvem host: state in $state"
echo "  XenAPI: http://$listen/ (XML-RPC), http://$listen/jsonrpc (JSON-RPC), https://$tls_listen/"
echo "  user root; the password is printed below on first start (also in $state/root-password)"
echo "  xe on this host: build/release/cli/xe -s unix:$state/xapi.sock host-list"
exec build/release/xapid/xapid --state-dir "$state" --listen "$listen" --tls-listen "$tls_listen"
