"""Messaging: communications, consent, contact verdicts, channels and the outbox."""
