"""The CDS Hooks 2.0 service and the questionnaire page (FastAPI): `lumbar-kb serve`."""
