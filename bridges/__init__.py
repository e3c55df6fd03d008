"""Messaging bridges (SMS, WhatsApp, web chat) that feed the same flows and timeline as calls.

Transport: provider webhooks (http.py, twilio.py, whatsapp.py) store inbound messages durably (inbox.py)
before acknowledging them; replies leave through the outbox (outbox.py); channels.py reads
dialplans/channels.yaml; fakes/ stands in for the providers' servers. What passes between the transport
and the conversation layer is declared in messages.py."""
