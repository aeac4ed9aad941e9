#!/usr/bin/env bash
# Make sure the local PostgreSQL used by the storage tests is up (127.0.0.1:5432, trust auth).
# Set USEG_TEST_POSTGRES_URL to point the tests elsewhere; set it to "skip" only on machines with no server.
set -u
if [ "${USEG_TEST_POSTGRES_URL:-}" = "skip" ]; then exit 0; fi
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then exit 0; fi
if command -v pg_ctlcluster >/dev/null 2>&1; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && exit 0
  sleep 1
done
echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2
exit 1
