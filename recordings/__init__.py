"""Call recordings (consent, PCI pause, encryption at rest, retention, transcripts).

Not built yet: this package is reserved for that work and holds no code so far."""
