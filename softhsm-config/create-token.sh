#!/usr/bin/env bash
# Creates a fresh SoftHSM2 token in a directory of its own; never touches the system token dir.
#
#   softhsm-config/create-token.sh DIR [LABEL]
#
# PINs come from the environment (never the command line of this script):
#   STRONGROOM_SO_PIN   security officer PIN (default: a random one, written to DIR/so-pin)
#   STRONGROOM_HSM_PIN  user PIN             (default: a random one, written to DIR/user-pin)
# Writes DIR/softhsm2.conf and DIR/tokens/; prints the lines to export.
set -euo pipefail
dir=${1:?usage: create-token.sh DIR [LABEL]}
label=${2:-strongroom}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v softhsm2-util >/dev/null || { echo "softhsm2-util not found: apt-get install softhsm2" >&2; exit 1; }

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
chmod 700 "$dir"
sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.template" > "$dir/softhsm2.conf"

random_pin() { od -An -N8 -tu8 /dev/urandom | tr -d ' \n' | cut -c1-12; }
so_pin=${STRONGROOM_SO_PIN:-$(random_pin)}
user_pin=${STRONGROOM_HSM_PIN:-$(random_pin)}
umask 077
printf '%s\n' "$so_pin" > "$dir/so-pin"
printf '%s\n' "$user_pin" > "$dir/user-pin"

# softhsm2-util takes PINs only as arguments; they are visible to `ps` for the instant it runs,
# which is acceptable for development and test tokens, never for production ones.
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label "$label" \
  --so-pin "$so_pin" --pin "$user_pin" >/dev/null

module=""
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
  [ -e "$m" ] && { module=$m; break; }
done
cat <<OUT
export SOFTHSM2_CONF=$dir/softhsm2.conf
export STRONGROOM_PKCS11_MODULE=$module
export STRONGROOM_TOKEN_LABEL=$label
export STRONGROOM_HSM_PIN_FILE=$dir/user-pin
OUT
