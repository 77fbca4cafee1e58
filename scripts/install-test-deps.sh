#!/usr/bin/env bash
# Installs everything the interop tests need (idempotent). CI runs it from a
# fresh clone as root; developers can run it as often as they like.
#   - Debian packages: kcat, confluent-kafka-python, kafka-python, HAProxy,
#     SoftHSM2, an MIT Kerberos KDC and client, the GSSAPI SASL module.
#   - npm: kafkajs (exact version pinned in test/interop/js/package-lock.json).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

APT_PKGS=(
  kcat
  python3-confluent-kafka
  python3-kafka
  python3-cryptography
  haproxy
  softhsm2
  krb5-kdc
  krb5-admin-server
  krb5-user
  libsasl2-modules-gssapi-mit
)

missing=()
for p in "${APT_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-test-deps: apt packages missing: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update
  # The KDC packages ask debconf questions (realm, servers); answer none.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${APT_PKGS[@]}"
else
  echo "install-test-deps: apt packages already installed"
fi

# kafkajs for test/interop/js (versions pinned by package-lock.json).
if command -v npm >/dev/null 2>&1; then
  cd "$ROOT/test/interop/js"
  if [[ -f node_modules/kafkajs/package.json ]] &&
     node -e 'process.exit(require("./node_modules/kafkajs/package.json").version === require("./package.json").dependencies.kafkajs ? 0 : 1)'; then
    echo "install-test-deps: kafkajs already installed"
  else
    npm ci --no-audit --no-fund --loglevel=error
  fi
else
  echo "install-test-deps: npm not found; kafkajs interop test will be skipped (or fail under CI=true)" >&2
fi
