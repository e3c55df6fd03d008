"""The only code that speaks to Asterisk: ARI (REST + events WebSocket), AMI, and its configuration."""
