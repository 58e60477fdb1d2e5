"""FHIR R4 in and out: the terminology bindings (`codes.yaml`), FHIR resources mapped to facts, and the
knowledge base exported as a Questionnaire and a PlanDefinition with ActivityDefinitions."""
