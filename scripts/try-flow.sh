#!/usr/bin/env bash
# Walks the development server (make run) through one FAPI 2.0-style code flow with the demo
# client that scripts/dev-seed.sh registered: PAR over mTLS, the login in your browser, the code
# exchange over mTLS (a certificate-bound token), then userinfo with that certificate.
# With --payment, the request carries the seed's one_time_payment authorization_details
# (RFC 9396) for the demo payments API: the consent page shows the payment, and the token
# response and access token carry the approved details and a txn.
#
# usage: scripts/try-flow.sh [--payment] [dev-hsm dir]
set -euo pipefail
PAYMENT=
if [ "${1:-}" = --payment ]; then PAYMENT=1; shift; fi
DEMO=${1:-dev-hsm}/demo
ISSUER=https://localhost:8443
MTLS=https://localhost:8444
CLIENT_ID=$(cat "$DEMO/client_id")
REDIRECT=http://127.0.0.1:9999/callback
CURL=(curl -sS -k --cert "$DEMO/client.pem" --key "$DEMO/client.key")
b64url() { base64 | tr '+/' '-_' | tr -d '=\n'; }

VERIFIER=$(openssl rand 32 | b64url)
CHALLENGE=$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | b64url)
STATE=$(openssl rand 12 | b64url)

EXTRA=()
if [ -n "$PAYMENT" ]; then
  EXTRA=(--data-urlencode 'authorization_details=[{"type": "one_time_payment",
    "amount": {"amount": 2460.46, "currency": "USD"}, "sourceAccount": "xxxxxxxxxxx4567",
    "recipient": "Acme Travel, Inc.", "concept": "All Inclusive Resort Package for Two"}]')
fi
PAR=$("${CURL[@]}" "$MTLS/par" -d client_id="$CLIENT_ID" -d response_type=code \
  --data-urlencode redirect_uri="$REDIRECT" --data-urlencode "scope=openid profile email" \
  -d state="$STATE" -d nonce="$(openssl rand 12 | b64url)" \
  -d code_challenge="$CHALLENGE" -d code_challenge_method=S256 ${EXTRA[@]+"${EXTRA[@]}"})
echo "PAR: $PAR"
REQUEST_URI=$(printf '%s' "$PAR" | sed -n 's/.*"request_uri":"\([^"]*\)".*/\1/p')
[ -n "$REQUEST_URI" ] || exit 1
echo
echo "Open this in a browser (accept the development certificate), sign in as 'demo' with the"
echo "password in $DEMO/password, and approve:"
echo
echo "  $ISSUER/authorize?client_id=$CLIENT_ID&request_uri=$(printf '%s' "$REQUEST_URI" | sed 's/:/%3A/g')"
echo
echo "The browser then fails to load $REDIRECT?code=... (nothing listens there)."
read -r -p "Paste that whole address here: " BACK
CODE=$(printf '%s' "$BACK" | sed -n 's/.*[?&]code=\([^&]*\).*/\1/p')
printf '%s' "$BACK" | grep -q "state=$STATE" || { echo "state does not match" >&2; exit 1; }

TOKENS=$("${CURL[@]}" "$MTLS/token" -d grant_type=authorization_code -d client_id="$CLIENT_ID" \
  -d code="$CODE" --data-urlencode redirect_uri="$REDIRECT" -d code_verifier="$VERIFIER")
echo "token response: $TOKENS"
ACCESS=$(printf '%s' "$TOKENS" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
echo
if [ -n "$PAYMENT" ]; then
  echo "The access token is for the payments API (aud), so /userinfo refuses it; its claims:"
  printf '%s' "$ACCESS" | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null; echo
  exit 0
fi
echo "userinfo (with the certificate the token is bound to):"
"${CURL[@]}" "$MTLS/userinfo" -H "Authorization: Bearer $ACCESS"
echo
echo "userinfo without it (refused):"
curl -sS -k "$ISSUER/userinfo" -H "Authorization: Bearer $ACCESS"
echo
