#!/usr/bin/env bash
# Makes sure the servers socnet runs are on this machine, installing the
# Debian/Ubuntu packages that are missing when we are allowed to.
#   scripts/ensure-deps.sh postgres redis patroni etcd haproxy ip
set -euo pipefail

have() {
	case "$1" in
	postgres)
		command -v postgres >/dev/null 2>&1 && return 0
		compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null
		;;
	redis) [ -x /usr/bin/redis-server ] ;;
	patroni) command -v patroni >/dev/null 2>&1 ;;
	etcd) command -v etcd >/dev/null 2>&1 ;;
	haproxy) command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] ;;
	ip) command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] ;;
	*) echo "ensure-deps: unknown dependency $1" >&2; exit 2 ;;
	esac
}

package() {
	case "$1" in
	postgres) echo postgresql ;;
	redis) echo redis-server ;;
	patroni) echo patroni ;;
	etcd) echo etcd-server ;;
	haproxy) echo haproxy ;;
	ip) echo iproute2 ;;
	esac
}

missing=()
for dep in "$@"; do
	have "$dep" || missing+=("$(package "$dep")")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
	echo "missing: ${missing[*]}, and apt-get is not here: install them (PostgreSQL 13+ with postgres, initdb, pg_basebackup, pg_rewind; redis-server 6+) and retry." >&2
	exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
		echo "missing: ${missing[*]}; run as root or install sudo: apt-get install ${missing[*]}" >&2
		exit 1
	fi
fi
echo "installing ${missing[*]} (apt-get install)..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
# The packages start servers of their own (PostgreSQL on 5432, Redis on 6379,
# etcd on 2379); socnet runs its own on free ports, so Redis's and etcd's are
# stopped again.
for p in "${missing[@]}"; do
	if command -v service >/dev/null 2>&1; then
		case "$p" in
		redis-server) $SUDO service redis-server stop >/dev/null 2>&1 || true ;;
		etcd-server) $SUDO service etcd stop >/dev/null 2>&1 || true ;;
		haproxy) $SUDO service haproxy stop >/dev/null 2>&1 || true ;;
		esac
	fi
done
for dep in "$@"; do
	have "$dep" || { echo "ensure-deps: $dep still missing after apt-get install" >&2; exit 1; }
done
