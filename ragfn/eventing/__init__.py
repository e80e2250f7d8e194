"""The CloudEvents ragfn produces and consumes (types and pydantic models), publishing them, the Trigger YAML as
routing, the local broker that reads it, and the dead letters.

May import: ragfn.core.
"""
