"""Inbound email: bounces, complaints, mailto unsubscribes, replies and written requests."""
