"""The clinic's wing: what clinicians meet at the moment of the decision.

`service` is the CDS Hooks service (`lumbar-kb serve`): cards, the questionnaire page and the audit of what it
answered; `fhir` reads FHIR resources into a patient's answers and exports the knowledge base as FHIR. Both
are views of the engine's Results: no clinical logic lives here.
"""
