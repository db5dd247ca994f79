#!/usr/bin/env bash
# Debian packages the tests and benchmarks use: real human speech (never committed to the repo),
# espeak-ng (a second caller voice), chromium (the dashboard tests) and haproxy (the shipped balancer
# config, run in front of a real worker by tests/agent/web/test_edge.py).
# Installs only what is missing, so a second run costs a few dpkg look-ups.
set -euo pipefail
pkgs=(asterisk-core-sounds-en-wav asterisk-core-sounds-en asterisk-core-sounds-es-wav pocketsphinx-testdata espeak-ng
      chromium  # chromium: the dashboard tests drive it with Playwright (no browser download)
      haproxy   # deploy/compose/haproxy.cfg in front of `hotline serve`: forged X-Forwarded-For, log redaction
      # Multilingual calls: Spanish transcripts (core-sounds-es.txt, for WER), French, Italian, Russian speech.
      asterisk-core-sounds-es asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
echo "installing test speech: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
