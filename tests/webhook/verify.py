"""Verifies webhook requests with the `standardwebhooks` package, as a receiver of
Herald's status webhooks would: reads one JSON object a line from stdin,
{"secret": "whsec_…", "headers": {name: value}, "body": "…"}, and prints the
verified payload of each, one JSON line each. Exits 1 at the first request that
does not verify, 3 when the package is missing (scripts/test installs it)."""

import json
import sys

try:
    from standardwebhooks.webhooks import Webhook
except ImportError as e:
    print(f"standardwebhooks is not installed ({e}): scripts/test installs it", file=sys.stderr)
    sys.exit(3)

for n, line in enumerate(sys.stdin, start=1):
    request = json.loads(line)
    try:
        payload = Webhook(request["secret"]).verify(request["body"], request["headers"])
    except Exception as e:  # the library's WebhookVerificationError, or a malformed header
        print(f"request {n} does not verify: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(payload), flush=True)
