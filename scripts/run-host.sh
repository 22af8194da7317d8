#!/usr/bin/env bash
# Sets up and runs a Nuvem host: installs packages, builds, starts xapid on an embedded default
# (temp state dir, SQLite DB), installs a demo VM from the "Nuvem Mini Guest" template with xe,
# starts it and shows it in `xe vm-list`. xapid then stays in the foreground; Ctrl-C shuts the
# demo VM down and stops xapid. NUVEM_STATE_DIR, NUVEM_LISTEN, NUVEM_TLS_LISTEN override the
# defaults; NUVEM_DEMO_VM=0 skips the demo VM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh release
state=${NUVEM_STATE_DIR:-$(mktemp -d /tmp/nuvem-host.XXXXXX)}
listen=${NUVEM_LISTEN:-127.0.0.1:8080}
tls_listen=${NUVEM_TLS_LISTEN:-127.0.0.1:8443}
xe=(build/release/cli/xe -s "unix:$state/xapi.sock")
echo "Nuvem host: state in $state"
echo "  XenAPI: http://$listen/ (XML-RPC), http://$listen/jsonrpc (JSON-RPC), https://$tls_listen/"
echo "  user root; the password is printed below on first start (also in $state/root-password)"
echo "  xe on this host: build/release/cli/xe -s unix:$state/xapi.sock vm-list"
build/release/xapid/xapid --state-dir "$state" --listen "$listen" --tls-listen "$tls_listen" &
xapid=$!
demo=
stop() {
  trap - INT TERM
  if [ -n "$demo" ]; then
    echo "shutting down the demo VM"
    "${xe[@]}" vm-shutdown uuid="$demo" --force >/dev/null 2>&1 || true
  fi
  kill -TERM "$xapid" 2>/dev/null || true
  wait "$xapid" 2>/dev/null || true
  exit 0
}
trap stop INT TERM
for _ in $(seq 1 300); do
  [ -S "$state/xapi.sock" ] && "${xe[@]}" host-list --minimal >/dev/null 2>&1 && break
  kill -0 "$xapid" 2>/dev/null || { echo "xapid exited" >&2; exit 1; }
  sleep 0.1
done
if [ "${NUVEM_DEMO_VM:-1}" != 0 ]; then
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    demo=$("${xe[@]}" vm-install template="Nuvem Mini Guest" new-name-label=demo)
    "${xe[@]}" vm-start uuid="$demo"
    echo "demo VM $demo started; its serial console: ${xe[*]} console uuid=$demo"
  else
    echo "no usable /dev/kvm: not starting the demo VM" >&2
  fi
fi
"${xe[@]}" vm-list
wait "$xapid"
