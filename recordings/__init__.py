"""Call recordings: the caller-agent conversation and voicemail recorded through ARI, PCI pause and resume,
every file encrypted at rest (AES-256-GCM, rotating keys), metadata and an audit trail in PostgreSQL,
playback through short-lived signed URLs for those allowed, retention with legal hold.

Transcripts are not built yet."""
