"""The FHIR R4 export: the form as a `Questionnaire`, each record as resources, NDJSON files.

`questionnaire` builds the Questionnaire from the form's data (questionnaire_v1.json and the
message catalogs); `resources` maps one IntakeRecord to a Patient, a QuestionnaireResponse, a
Consent, its Conditions and MedicationStatements; both are pure (no I/O, clock or random).
`bulk` writes an export's NDJSON files, one resource a line, as FHIR Bulk Data does.
`systems` names every URI we mint (identifier systems, code systems, the canonical URL).
"""
