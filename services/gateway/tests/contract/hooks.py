"""Schemathesis hooks for the gateway's contract test (services/gateway/tests/contract.rs).

- Auth: a customer session, from logging in with the test user (refreshed every second, since
  the fuzzer also calls POST /v1/logout, which ends the session it holds).
- Stripe webhooks: a request whose Stripe-Signature has the documented shape is signed for real
  (HMAC-SHA256 of `<t>.<body>` under the test's signing secret) over the exact bytes sent, so
  schema-valid events reach the code behind the signature check; malformed headers stay as they
  were generated and must be refused.
"""

import hashlib
import hmac
import json
import os
import re
import time

import requests
import schemathesis
from schemathesis.core import NotSet

BASE = os.environ["SB_CONTRACT_BASE"]
EMAIL = os.environ["SB_CONTRACT_EMAIL"]
PASSWORD = os.environ["SB_CONTRACT_PASSWORD"]
WEBHOOK_SECRET = os.environ["SB_CONTRACT_WEBHOOK_SECRET"]
SIGNATURE_SHAPE = re.compile(os.environ["SB_CONTRACT_SIGNATURE_PATTERN"])


@schemathesis.auth(refresh_interval=1)
class CustomerSession:
    def get(self, case, ctx):
        r = requests.post(f"{BASE}/v1/login", json={"email": EMAIL, "password": PASSWORD}, timeout=10)
        r.raise_for_status()
        return r.json()["token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def _holds_nul(v):
    if isinstance(v, str):
        return "\x00" in v
    if isinstance(v, list):
        return any(_holds_nul(x) for x in v)
    if isinstance(v, dict):
        return any("\x00" in k or _holds_nul(x) for k, x in v.items())
    return False


@schemathesis.hook("filter_body").apply_to(path="/webhooks/stripe")
def no_nul_in_stripe_events(ctx, body):
    # The documented rule JSON Schema cannot say for nested values: Stripe never sends U+0000
    # (PostgreSQL cannot store it), so an event holding one is refused with 400.
    return not _holds_nul(body)


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if case.path != "/webhooks/stripe" or case.headers is None:
        return
    header = case.headers.get("Stripe-Signature")
    if not isinstance(header, str) or not SIGNATURE_SHAPE.fullmatch(header):
        return
    if isinstance(case.body, NotSet):
        return
    body = case.body if isinstance(case.body, bytes) else json.dumps(case.body, separators=(",", ":")).encode()
    t = str(int(time.time()))
    digest = hmac.new(WEBHOOK_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    case.headers["Stripe-Signature"] = f"t={t},v1={digest}"
    kwargs["data"] = body
