#!/usr/bin/env bash
# Make the secrets compose.yaml reads, once, with random values (existing files are kept):
#   deploy/.env              ClickHouse passwords of the hub and of Grafana, Grafana's admin password, the
#                            alert webhooks' signing secret (a variable missing from an existing .env is added)
#   deploy/secrets/app-keys  the apps' keys, NAME=KEY lines (the hub's TALLYHUB_APP_KEYS_FILE): `demo` to start
# Add a line per app to deploy/secrets/app-keys (`tallyhub apps create`'s keys or any 24+ random
# characters) and restart the hub: it creates the app or gives it that key.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
umask 077
if [ ! -e "$here/.env" ]; then
    {
        echo "TALLYHUB_CLICKHOUSE_PASSWORD=$(random)"
        echo "GRAFANA_CLICKHOUSE_PASSWORD=$(random)"
        echo "GF_SECURITY_ADMIN_PASSWORD=$(random)"
    } > "$here/.env"
    echo "wrote $here/.env"
fi
if ! grep -q '^TALLYHUB_WEBHOOK_SECRET=' "$here/.env"; then
    echo "TALLYHUB_WEBHOOK_SECRET=$(random)" >> "$here/.env"
    echo "added TALLYHUB_WEBHOOK_SECRET to $here/.env"
fi
mkdir -p "$here/secrets"
chmod 700 "$here/secrets"
if [ ! -e "$here/secrets/app-keys" ]; then
    echo "demo=thk_$(random)" > "$here/secrets/app-keys"
    # Readable by the containers' users (the hub runs as uid 10001; compose mounts the file as it is):
    # the directory, the owner's alone, keeps the machine's other users out.
    chmod 644 "$here/secrets/app-keys"
    echo "wrote $here/secrets/app-keys"
fi
