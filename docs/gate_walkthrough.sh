#!/usr/bin/env bash
# The README's "Gate a release in CI" walkthrough, end to end on a CPU: three releases of the reference model gated
# against a QuirkScope service started here (`quirkscope serve --embedded`: SQLite, no Redis). Run from a checkout
# with the package installed:  bash docs/gate_walkthrough.sh [WORKDIR]
set -euo pipefail
WORK=${1:-gate-walkthrough}
PORT=${PORT:-8765}
mkdir -p "$WORK" && cd "$WORK"
export QUIRKSCOPE_HOME=$PWD/.quirkscope QUIRKSCOPE_SECRET_KEY=walkthrough
URL=http://127.0.0.1:$PORT

cat > quirkscope.toml <<'TOML'
[gate]
baseline = "latest"            # the newest finished audit of another bundle of the same model
timeout = 900
[gate.audit]                   # a quick audit, enough for the reference model
steps = 32
levels = 1
seeds = 1
top_k = 3
[gate.rules]
new_findings = { action = "fail", min_severity = "medium", codes = ["LOCALIZED_CUE"] }
confirmed_findings = "fail"
localized_cue = "warn"
TOML

if [ ! -f v1/model.zip ]; then  # a second run reuses the two releases
    echo '$ quirkscope demo-data --out v1 --version v1'
    quirkscope demo-data --out v1 --version v1
fi
if [ ! -f v2/model.zip ]; then
    echo '$ quirkscope demo-data --out v2 --version v2 --plant watermark:BoxRiseUp'
    quirkscope demo-data --out v2 --version v2 --plant watermark:BoxRiseUp
fi

# the token first: it migrates the database, which the server must not do at the same time
export QUIRKSCOPE_TOKEN=$(quirkscope token create --project demo --scopes submit,read,review | awk '{print $NF}')
quirkscope serve --embedded --port "$PORT" > serve.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
python -c "
import time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen('$URL/api/v1/health'); break
    except OSError:
        time.sleep(0.5)
"

echo
echo '$ quirkscope gate --server $URL --model v1/model.zip --confusion v1/confusion.json --rule new_findings=warn'
quirkscope gate --server "$URL" --model v1/model.zip --confusion v1/confusion.json --rule new_findings=warn \
    && echo "exit code 0" || echo "exit code $?"

echo
echo '$ quirkscope gate --server $URL --model v2/model.zip --confusion v2/confusion.json --junit out/junit.xml --json out/gate.json --sarif out/gate.sarif'
quirkscope gate --server "$URL" --model v2/model.zip --confusion v2/confusion.json \
    --junit out/junit.xml --json out/gate.json --sarif out/gate.sarif && echo "exit code 0" || echo "exit code $?"

echo
echo '# a reviewer looks at the failing finding and dismisses it (here through the API; or on the report page)'
for FLAG in $(python -c "
import json
doc = json.load(open('out/gate.json'))
new = {f['fingerprint']: f['flag_id'] for f in doc['comparison']['findings']['new']}
print(' '.join(str(new[f['fingerprint']]) for f in doc['failures'] if f['fingerprint']))
"); do
    echo "\$ curl -X POST -H \"Authorization: Bearer \$QUIRKSCOPE_TOKEN\" -d '{\"verdict\": \"dismissed\", ...}' \$URL/api/v1/flags/$FLAG/review"
    curl -s -X POST -H "Authorization: Bearer $QUIRKSCOPE_TOKEN" -H "Content-Type: application/json" \
        -d '{"verdict": "dismissed", "note": "the corner logo ships with the product"}' "$URL/api/v1/flags/$FLAG/review"
    echo
done

echo
echo '$ quirkscope gate --server $URL --model v2/model.zip --confusion v2/confusion.json'
quirkscope gate --server "$URL" --model v2/model.zip --confusion v2/confusion.json \
    && echo "exit code 0" || echo "exit code $?"
