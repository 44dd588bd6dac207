#!/usr/bin/env bash
# Idempotent set-up of a Debian 12 machine for openhosting (run as root).
# Installs the Debian packages, builds .venv/, starts virtlogd and libvirtd when they are not running.
# Usage: tools/setup.sh [--with-postgres] [--with-browser]
#   --with-browser: Debian's chromium for the browser tests (Playwright drives it; no browser download)
set -euo pipefail
cd "$(dirname "$0")/.."
with_postgres=0 with_browser=0
for arg in "$@"; do
  case "$arg" in
    --with-postgres) with_postgres=1 ;;
    --with-browser) with_browser=1 ;;
    *) echo "usage: tools/setup.sh [--with-postgres] [--with-browser]" >&2; exit 2 ;;
  esac
done

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc pkg-config
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev dnsmasq-base
  linux-image-amd64 busybox-static debootstrap e2fsprogs tini
  isolinux syslinux syslinux-common mtools dosfstools xorriso cpio xz-utils zstd
  iproute2
)
if ((with_postgres)); then
  APT_PACKAGES+=(postgresql)
fi
if ((with_browser)); then
  APT_PACKAGES+=(chromium)
fi

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Swagger UI for /api/docs: the npm package's files only (npm pack fetches the tarball; no scripts, no
# dependencies run), unpacked where the app looks for them (not committed).
SWAGGER_UI_VERSION=5.35.0
vendor=var/vendor/swagger-ui-dist
if [[ "$(cat "$vendor/.version" 2>/dev/null)" != "$SWAGGER_UI_VERSION" ]]; then
  if ! command -v npm >/dev/null; then
    log "installing npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  log "fetching swagger-ui-dist $SWAGGER_UI_VERSION"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "swagger-ui-dist@$SWAGGER_UI_VERSION" >/dev/null)
  tar -xzf "$tmp/swagger-ui-dist-$SWAGGER_UI_VERSION.tgz" -C "$tmp"
  rm -rf "$vendor" && mkdir -p "$(dirname "$vendor")" && mv "$tmp/package" "$vendor"
  echo "$SWAGGER_UI_VERSION" > "$vendor/.version"
  rm -rf "$tmp"
fi

# The console proxy's browser assets (noVNC, xterm.js, ...): exact versions pinned in package.json and
# package-lock.json, installed into ./node_modules (not committed) without running package scripts.
if ! cmp -s package-lock.json node_modules/.openhosting-lock 2>/dev/null; then
  if ! command -v npm >/dev/null; then
    log "installing npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  log "installing the browser assets (npm ci)"
  npm ci --no-audit --no-fund --ignore-scripts --silent
  cp package-lock.json node_modules/.openhosting-lock
fi

stamp=.venv/.openhosting-installed
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  /usr/bin/python3 -m venv .venv
fi
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  log "installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi

# libvirt without systemd: virtlogd first (the first VM start fails without it), then libvirtd
# under a reaper so that QEMU children are collected promptly.
if ! pgrep -x virtlogd >/dev/null; then
  log "starting virtlogd"
  virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
  log "starting libvirtd"
  mkdir -p /var/log/openhosting
  setsid tini -s -- libvirtd >>/var/log/openhosting/libvirtd.log 2>&1 < /dev/null &
  for _ in $(seq 1 100); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

if ((with_postgres)); then
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $4}' | grep -q online; then
    log "starting PostgreSQL $ver"
    pg_ctlcluster "$ver" main start
  fi
  su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='openhosting'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE openhosting LOGIN PASSWORD 'openhosting' CREATEDB\""
  su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='openhosting_test'\"" | grep -q 1 ||
    su postgres -c "createdb -O openhosting openhosting_test"
fi
