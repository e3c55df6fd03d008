"""The peak simulator (`hilo loadtest`): a real peak driven against a running stack on loopback.

SIPp callers on a carrier trunk dial a number at a configurable arrival rate (with a ramp), answer the menu
by DTMF (SIP INFO or RFC 4733) or by voice, stay on the line and hang up; chat, SMS and WhatsApp customers
write through the provider fakes; agents may be made to talk for a given time. While it runs it samples the
CPU and memory of Asterisk, the Hilo server, PostgreSQL and Redis, and follows Hilo's events; at the end it
checks that the centre is back to rest and writes a JSON report and an HTML page with plots.

The modules, from the inside out: `profile` (what to run, refused unless loopback), `scenario` (the SIPp
caller), `sipp` (running it, reading its logs and statistics), `calls` (one record per call), `media` (the
callers' RTP: first prompt heard, RFC 4733 keys, synthesized speech), `procs` (/proc sampling),
`hilo_events` (queue figures from Hilo's events), `messaging` (text load), `agents` (talk time), `checks`
(after the run), `stats`, `report` and `page` (JSON and HTML), `runner` (one run) and `cli`."""
