"""Where alerts go: JSON webhooks (HMAC-signed), Slack-style incoming webhooks and e-mail over SMTP,
each channel delivered on its own, retried with backoff."""
