#!/usr/bin/env bash
# JSON-RPC v1 and v2 against a real xapid, driven with curl.
set -euo pipefail
XAPID=${XAPID:?path to xapid}
command -v curl >/dev/null || { echo "skip: curl is not installed"; exit 77; }
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
echo 'json-pw' > "$tmp/pw"
"$XAPID" --state-dir "$tmp/state" --listen 127.0.0.1:0 --root-password-file "$tmp/pw" \
    --password-iterations 1000 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do
    port=$(sed -n 's/.*http:\/\/127.0.0.1:\([0-9]*\)\/.*/\1/p' "$tmp/out")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "xapid did not start"; cat "$tmp/err"; exit 1; }
url="http://127.0.0.1:$port/jsonrpc"
fail=0
call() { curl -sS --max-time 20 -H 'Content-Type: application/json' -d "$1" "$url"; }
expect() { # name, body, python expression over r
    local out
    out=$(call "$2")
    if python3 -c "import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if ($3) else 1)" "$out"; then
        echo "ok: $1"
    else
        echo "FAIL: $1: $out"; fail=1
    fi
}
# v1 login with 4 args; v2 with 2
s1=$(call '{"method":"session.login_with_password","params":["root","json-pw","2.21","curl"],"id":1}' |
     python3 -c 'import json,sys; print(json.load(sys.stdin)["result"])')
s2=$(call '{"jsonrpc":"2.0","method":"session.login_with_password","params":["root","json-pw"],"id":"a"}' |
     python3 -c 'import json,sys; print(json.load(sys.stdin)["result"])')
expect "v1 result shape" "{\"method\":\"host.get_all\",\"params\":[\"$s1\"],\"id\":7}" \
    'r["error"] is None and r["id"] == 7 and len(r["result"]) == 1 and "jsonrpc" not in r'
expect "v2 result shape" "{\"jsonrpc\":\"2.0\",\"method\":\"pool.get_all_records\",\"params\":[\"$s2\"],\"id\":\"x\"}" \
    'r["jsonrpc"] == "2.0" and r["id"] == "x" and "error" not in r and len(r["result"]) == 1'
expect "v1 error shape" "{\"method\":\"VM.get_record\",\"params\":[\"$s1\",\"OpaqueRef:nope\"],\"id\":2}" \
    'r["result"] is None and r["error"] == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]'
expect "v2 error shape" "{\"jsonrpc\":\"2.0\",\"method\":\"VM.get_record\",\"params\":[\"$s2\",\"OpaqueRef:nope\"],\"id\":3}" \
    'r["error"] == {"code": 1, "message": "HANDLE_INVALID", "data": ["VM", "OpaqueRef:nope"]} and r["id"] == 3'
expect "v2 bad session" "{\"jsonrpc\":\"2.0\",\"method\":\"VM.get_all\",\"params\":[\"OpaqueRef:dead\"],\"id\":8}" \
    'r["error"]["message"] == "SESSION_INVALID" and r["error"]["data"] == ["OpaqueRef:dead"]'
expect "ints are JSON integers" "{\"method\":\"host_metrics.get_all_records\",\"params\":[\"$s1\"],\"id\":4}" \
    'all(isinstance(m["memory_total"], int) for m in r["result"].values())'
expect "unknown method" "{\"jsonrpc\":\"2.0\",\"method\":\"nope.nope\",\"params\":[],\"id\":5}" \
    'r["error"]["message"] == "MESSAGE_METHOD_UNKNOWN"'
expect "v2 without params" "{\"jsonrpc\":\"2.0\",\"method\":\"system.listMethods\",\"id\":6}" \
    '"VM.get_record" in r["result"]'
expect "arity" "{\"method\":\"VM.get_record\",\"params\":[\"$s1\"],\"id\":9}" \
    'r["error"] == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "1", "0"]'
printf '{"method":"VM.get_by_name_label","params":["%s","caf\xff\xfe"],"id":10}' "$s1" > "$tmp/bad.json"
out=$(curl -sS --max-time 10 -H 'Content-Type: application/json' --data-binary @"$tmp/bad.json" "$url" || true)
if python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r["error"][0]=="INVALID_VALUE" else 1)' "$out" 2>/dev/null; then
    echo "ok: non-UTF-8 string -> INVALID_VALUE"
else
    echo "FAIL: non-UTF-8 string: $out"; fail=1
fi
# Async via JSON: the task result is still XML-RPC encoded
t=$(call "{\"jsonrpc\":\"2.0\",\"method\":\"Async.message.create\",\"params\":[\"$s2\",\"HELLO\",5,\"Pool\",\"\",\"body\"],\"id\":11}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["result"])')
for _ in $(seq 100); do
    st=$(call "{\"jsonrpc\":\"2.0\",\"method\":\"task.get_status\",\"params\":[\"$s2\",\"$t\"],\"id\":12}" |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["result"])')
    [ "$st" != pending ] && break
    sleep 0.05
done
expect "async result is XML" "{\"jsonrpc\":\"2.0\",\"method\":\"task.get_result\",\"params\":[\"$s2\",\"$t\"],\"id\":13}" \
    'r["result"].startswith("<value>OpaqueRef:")'
# malformed bodies: HTTP 500, connection closed, daemon fine
for body in '{' '[1,2]' '{"method":"x","params":[]}' 'null' '{"method":5,"params":[],"id":1}'; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' -d "$body" "$url")
    if [ "$code" = 500 ]; then echo "ok: malformed $body -> 500"; else echo "FAIL: malformed $body -> $code"; fail=1; fi
done
deep=$(python3 -c 'print("{\"method\":\"VM.get_all\",\"params\":" + "["*10000 + "]"*10000 + ",\"id\":1}")')
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' -d "$deep" "$url")
[ "$code" = 500 ] && echo "ok: deep nesting -> 500" || { echo "FAIL: deep nesting -> $code"; fail=1; }
ctype=$(curl -s -o /dev/null -w '%{content_type}' --max-time 10 -H 'Content-Type: application/json' \
    -d '{"method":"system.listMethods","params":[],"id":1}' "$url")
[ "$ctype" = application/json ] && echo "ok: content type" || { echo "FAIL: content type $ctype"; fail=1; }
expect "still alive" "{\"method\":\"pool.get_all\",\"params\":[\"$s1\"],\"id\":14}" 'len(r["result"]) == 1'
kill -TERM "$pid"; wait "$pid"; rc=$?; pid=
[ "$rc" = 0 ] && echo "ok: clean SIGTERM exit" || { echo "FAIL: exit $rc"; fail=1; }
exit $fail
