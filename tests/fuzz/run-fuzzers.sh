#!/bin/sh
# Runs each libFuzzer binary of a NUVEM_FUZZ build for SECONDS over a scratch copy of its
# corpus (the checked-in seeds are never modified). Crashes, leaks and timeouts fail the run;
# their reproducers are left in BUILD_DIR/fuzz-artifacts/.
# Usage: tests/fuzz/run-fuzzers.sh BUILD_DIR SECONDS
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$1
secs=$2
here=$(cd "$(dirname "$0")" && pwd)
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Tokens that get the fuzzers past the tag names quickly.
cat > "$scratch/xmlrpc.dict" <<'DICT'
"<?xml version=\"1.0\"?>"
"<methodCall>"
"</methodCall>"
"<methodName>"
"</methodName>"
"<methodResponse>"
"</methodResponse>"
"<params>"
"</params>"
"<param>"
"</param>"
"<value>"
"</value>"
"<value/>"
"<string>"
"</string>"
"<i4>"
"</i4>"
"<int>"
"</int>"
"<i8>"
"</i8>"
"<boolean>"
"</boolean>"
"<double>"
"</double>"
"<dateTime.iso8601>"
"</dateTime.iso8601>"
"<base64>"
"</base64>"
"<nil/>"
"<array><data>"
"</data></array>"
"<struct>"
"</struct>"
"<member>"
"</member>"
"<name>"
"</name>"
"<fault>"
"</fault>"
"Status"
"Success"
"Failure"
"Value"
"ErrorDescription"
"faultCode"
"faultString"
"<!DOCTYPE"
"<!ENTITY"
"<![CDATA["
"]]>"
"<!--"
"-->"
"&amp;"
"&#13;"
"encoding=\"ISO-8859-1\""
DICT
cat > "$scratch/jsonrpc.dict" <<'DICT'
"\"jsonrpc\""
"\"2.0\""
"\"method\""
"\"params\""
"\"id\""
"\"result\""
"\"error\""
"\"code\""
"\"message\""
"\"data\""
"null"
"true"
"false"
"9223372036854775807"
"-9223372036854775808"
"18446744073709551616"
"1e400"
"NaN"
"Infinity"
"\\u0000"
"\\ud800"
"\\\""
DICT

status=0
found=0
# Every libFuzzer binary of the build (fuzz_NAME; the fuzz_replay_* tests are not libFuzzer),
# each over tests/fuzz/corpus/NAME when there is one.
for bin in $(find "$build" -type f -perm -u+x -name 'fuzz_*' ! -name 'fuzz_replay_*' | sort); do
    found=1
    name=$(basename "$bin")
    kind=${name#fuzz_}
    work="$scratch/corpus-$kind"
    mkdir -p "$work"
    cp "$here/corpus/$kind/"* "$work/" 2>/dev/null || true
    set --
    if [ -f "$scratch/$kind.dict" ]; then
        set -- -dict="$scratch/$kind.dict"
    fi
    echo "== $name for ${secs}s over $(find "$work" -type f | wc -l) seeds"
    if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$artifacts/$name-" -print_final_stats=1 "$@" "$work"; then
        echo "!! $name failed; reproducers in $artifacts" >&2
        status=1
    fi
done
if [ "$found" -eq 0 ]; then
    echo "no libFuzzer binaries (fuzz_*) under $build (configure with NUVEM_FUZZ=ON)" >&2
    exit 1
fi
exit $status
