"""Call recordings: the caller-agent conversation (mixed, or one file per leg) and voicemail recorded through
ARI, PCI pause and resume, every file encrypted at rest (AES-256-GCM, rotating keys), metadata and an audit
trail in PostgreSQL, playback through short-lived signed URLs for those allowed, retention with legal hold,
and transcripts (a durable background queue, full-text search, redacted at retention)."""
