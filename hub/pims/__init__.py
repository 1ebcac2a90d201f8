"""PIMS sync: connector contract, records, normalisation, models and the sync engine."""
