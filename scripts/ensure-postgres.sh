#!/usr/bin/env bash
# Makes sure the PostgreSQL server programs are on this machine; installs the
# Debian/Ubuntu package when they are missing and we are allowed to.
set -euo pipefail

have_server() {
	command -v postgres >/dev/null 2>&1 && return 0
	compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null
}

if have_server; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "PostgreSQL server programs not found and apt-get is missing: install PostgreSQL 13+ (postgres, initdb, pg_basebackup, pg_rewind) and retry." >&2
	exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
		echo "PostgreSQL server programs not found; run as root or install sudo: apt-get install postgresql" >&2
		exit 1
	fi
fi
echo "installing the PostgreSQL server (apt-get install postgresql)..."
$SUDO apt-get update -qq
# The Debian package starts a cluster of its own on port 5432; socnet does not use it.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
have_server
