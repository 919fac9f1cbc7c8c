#!/bin/sh
# install-deps.sh — installs every Debian 12 package kiln needs to build, run its demo
# and run its test suite (uses sudo when not root).
set -e
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends \
  build-essential autoconf automake pkg-config \
  libev-dev libssl-dev libc-ares-dev libsqlite3-dev libyaml-dev libjansson-dev libcrypt-dev libcurl4-openssl-dev libmicrohttpd-dev \
  libgmime-3.0-dev libhiredis-dev redis-server \
  check python3 python3-aiosmtpd python3-dnspython dnsmasq-base openssl swaks procps \
  iproute2 nftables python3-dkim python3-nacl opendkim-tools \
  awscli python3-boto3 python3-botocore python3-yaml \
  python3-prometheus-client prometheus \
  chromium chromium-driver python3-selenium
# Postfix for the feedback test's relay (a private instance under a temp dir; the system's
# instance stays unconfigured and stopped: "No configuration")
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get install -y --no-install-recommends postfix
