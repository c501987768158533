#!/usr/bin/env bash
# Make the files kustomization.yaml turns into Secrets, once, with random values (existing ones kept):
#   secrets/clickhouse-password           the hub's ClickHouse user `tallyhub`
#   secrets/grafana-clickhouse-password   Grafana's read-only user `grafana`
#   secrets/app-keys                      the apps' keys, NAME=KEY lines (TALLYHUB_APP_KEYS_FILE)
#   secrets/webhook-secret                signs the alerts' webhooks (TALLYHUB_WEBHOOK_SECRET)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(24), end="")'; }
umask 077
mkdir -p "$here/secrets"
for name in clickhouse-password grafana-clickhouse-password webhook-secret; do
    if [ ! -e "$here/secrets/$name" ]; then
        random > "$here/secrets/$name"
        echo "wrote $here/secrets/$name"
    fi
done
if [ ! -e "$here/secrets/app-keys" ]; then
    echo "demo=thk_$(random)" > "$here/secrets/app-keys"
    echo "wrote $here/secrets/app-keys"
fi
