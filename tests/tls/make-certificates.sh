#!/usr/bin/env bash
# Test-only certificates (never used outside tests): a CA, a server certificate for localhost
# and 127.0.0.1, and a client certificate (CN=billing), valid for 100 years. Regenerate with
# `bash tests/tls/make-certificates.sh` from the repository root.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days $days \
  -subj "/CN=Mandate test CA" 2>/dev/null
for name in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $name.key -out $name.csr \
    -subj "/CN=$([ $name = server ] && echo localhost || echo billing)" 2>/dev/null
done
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" > server.ext
printf "extendedKeyUsage=clientAuth\n" > client.ext
for name in server client; do
  openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $name.pem -days $days \
    -extfile $name.ext 2>/dev/null
done
rm -f ./*.csr ./*.ext ca.srl ca.key
