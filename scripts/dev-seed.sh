#!/usr/bin/env bash
# Seeds the development server that `make run` starts, once: a demo user, a client CA, a
# demo client (tls_client_auth, certificate-bound tokens) with its certificate, and a demo
# payments API that accepts the seed's one_time_payment authorization_details (RFC 9396).
# Everything lands in $DIR/demo (git-ignored with the rest of dev-hsm/).
#
# usage: scripts/dev-seed.sh <strongroom binary> <dev-hsm dir>
# (SOFTHSM2_CONF and STRONGROOM_CONFIG must point at the development token and config/dev.toml)
set -euo pipefail
BIN=$1
DEMO=$2/demo

# The payments API (also added to a development database seeded before it existed).
seed_api() {
  [ -s "$DEMO/payments_api.json" ] && return 0
  cat > "$DEMO/payments_api.json.tmp" <<JSON
{
  "identifier": "https://api.localhost/payments",
  "name": "Demo payments API",
  "scopes": [{"value": "payments", "description": "Make payments"}],
  "allowed_clients": ["$(cat "$DEMO/client_id")"],
  "authorization_details": [{
    "type": "one_time_payment",
    "schema": {
      "type": "object",
      "required": ["type", "amount", "recipient"],
      "properties": {
        "type": {"const": "one_time_payment"},
        "amount": {"type": "object", "required": ["amount", "currency"],
                   "properties": {"amount": {"type": "number", "exclusiveMinimum": 0},
                                  "currency": {"type": "string", "pattern": "^[A-Z]{3}\$"}}},
        "sourceAccount": {"type": "string"},
        "recipient": {"type": "string", "minLength": 1},
        "concept": {"type": "string"}
      }
    }
  }]
}
JSON
  "$BIN" resource-servers create --file "$DEMO/payments_api.json.tmp" >/dev/null
  mv "$DEMO/payments_api.json.tmp" "$DEMO/payments_api.json"
  echo "seeded: API https://api.localhost/payments (one_time_payment details; $DEMO/payments_api.json)"
}

if [ -s "$DEMO/client_id" ]; then
  seed_api
  exit 0
fi
mkdir -p "$DEMO"
chmod 700 "$DEMO"
# No cd: the configuration's paths are relative to the repository root.
D=$DEMO

# A client CA and a client certificate it issued (tls_client_auth checks both).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$D/ca.key" -out "$D/ca.pem" -days 825 \
  -subj "/O=Strongroom demo/CN=Strongroom demo client CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$D/client.key" -out "$D/client.csr" \
  -subj "/O=Strongroom demo/CN=demo-client" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > "$D/client.ext"
openssl x509 -req -in "$D/client.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -CAcreateserial -days 825 \
  -extfile "$D/client.ext" -out "$D/client.pem" 2>/dev/null
rm -f "$D/client.csr" "$D/client.ext" "$D/ca.srl"
chmod 600 "$D/ca.key" "$D/client.key"

cat > "$D/client.json" <<'JSON'
{
  "client_name": "Strongroom demo client",
  "redirect_uris": ["http://127.0.0.1:9999/callback"],
  "token_endpoint_auth_method": "tls_client_auth",
  "tls_client_auth_subject_dn": "CN=demo-client,O=Strongroom demo",
  "tls_client_certificate_bound_access_tokens": true,
  "require_pushed_authorization_requests": true,
  "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
  "response_types": ["code"],
  "scope": "openid profile email accounts"
}
JSON
"$BIN" clients create --file "$D/client.json" \
  | sed -n 's/^ *"client_id": *"\([^"]*\)".*/\1/p' | head -n1 > "$D/client_id.tmp"
[ -s "$D/client_id.tmp" ] || { echo "dev-seed: no client_id from 'clients create'" >&2; exit 1; }

# The demo user, with a random password kept next to the client (mode 600).
umask 077
openssl rand -base64 18 | tr -d '/+=' > "$D/password"
echo '{"name": "Demo User", "email": "demo@example.com", "email_verified": true}' > "$D/claims.json"
"$BIN" users create --username demo --password-file "$D/password" --claims-file "$D/claims.json" >/dev/null
mv "$D/client_id.tmp" "$D/client_id"
echo "seeded: user 'demo' (password in $D/password), client $(cat "$D/client_id") ($D/client.json)"
seed_api
