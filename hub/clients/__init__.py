"""Clients (pet owners): search, details, preferences, alerts, reminders, timeline, surveys,
loyalty. The PIMS domain owns the synced rows; this domain reads them and owns its own tables."""
