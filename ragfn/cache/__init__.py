"""The semantic answer cache: on plain Redis or in process memory, one set of rules, and the guard against false hits
(negations, changed numbers).

May import: ragfn.core.
"""
