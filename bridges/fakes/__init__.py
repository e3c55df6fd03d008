"""Stand-ins for the messaging providers' servers (Twilio, WhatsApp Cloud API) on loopback, for the tests
and the demo: they speak the providers' request/response formats, check their credentials, record what
they receive, fail on request (5xx, 429 with Retry-After, timeouts, provider error codes), and call Hilo
back with webhooks signed exactly as the providers sign them."""
