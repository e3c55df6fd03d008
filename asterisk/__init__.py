"""The only code that speaks to Asterisk: ARI (REST + events WebSocket), AMI, its configuration (the phones
Hilo provisions among it), and the SIP guard acting on its security events."""
