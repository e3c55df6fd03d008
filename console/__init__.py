"""The HTTP face of Hilo: health, metrics and the authenticated JSON API (agent console pages come later)."""
