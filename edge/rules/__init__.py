"""Rules: what the gateway decides (who may pass) and what it tells the guards (alerts)."""
