"""Event contracts of the yigongti county medical community platform.

envelope (CloudEvents Kafka binding), topics, patient_ref, common (shared types,
IntakeRejected), lab.v1, registry, refdata (Changji reference data), export and
compat (frozen JSON Schemas), asyncapi. Pure pydantic; no I/O but package files.
"""
