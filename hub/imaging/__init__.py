"""Imaging: studies, instances, cases and their services (DICOM lives in plugins.dicom)."""
