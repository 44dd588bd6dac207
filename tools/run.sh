#!/usr/bin/env bash
# The README's run command: installs what is needed (idempotently), migrates the database, creates a
# first user when there is none (printing its credentials), starts the agent, the console proxy
# (${OPENHOSTING_CONSOLE_BIND:-127.0.0.1:8081}) and the terminal service (SSH on
# ${OPENHOSTING_SSH_BIND:-127.0.0.1:2222}) and serves the API on ${OPENHOSTING_BIND:-127.0.0.1:8080}.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
admin=.venv/bin/openhosting-admin
$admin db upgrade
# The public network's IP range: checked against the host (picked once when OPENHOSTING_IP_POOL is
# unset); a clash stops here with a message naming what overlaps and a free range.
$admin host pool
# Sandbox images (Debian packages -> kernel, initramfs, root file system); seconds when already built.
$admin image build base
if [[ -z "$($admin user list)" ]]; then
  echo "No user yet; creating the first one:"
  $admin user create --name admin
fi
state="${OPENHOSTING_STATE_DIR:-$PWD/var}"
mkdir -p "$state/log"
$admin agent >>"$state/log/agent.log" 2>&1 &
agent=$!
# The console proxy: its own process (restart it alone at will); the API builds console links from
# OPENHOSTING_CONSOLE_URL, by default http://$OPENHOSTING_CONSOLE_BIND.
export OPENHOSTING_CONSOLE_BIND="${OPENHOSTING_CONSOLE_BIND:-127.0.0.1:8081}"
$admin console-proxy --bind "$OPENHOSTING_CONSOLE_BIND" >>"$state/log/console-proxy.log" 2>&1 &
proxy=$!
# The terminal service: holds workspaces' terminal ports for the proxy's terminal pages and serves the
# SSH gateway on ${OPENHOSTING_SSH_BIND:-127.0.0.1:2222} ("none": no SSH).
$admin terminal-service --ssh-bind "${OPENHOSTING_SSH_BIND:-127.0.0.1:2222}" >>"$state/log/terminal.log" 2>&1 &
terminal=$!
trap 'kill $agent $proxy $terminal 2>/dev/null || true' EXIT
$admin serve --bind "${OPENHOSTING_BIND:-127.0.0.1:8080}"
