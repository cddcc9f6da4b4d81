"""Column types: the one registry of the types an entity's columns may have
(`types.py`), how a decoded JSON value becomes a value of that type (`converters.py`),
how that value is written as the text PostgreSQL reads (`copy_formats.py`), the two
in one step (`cells.py`), and the exact JSON number those start from
(`json_number.py`).

It sits below every layer: the configuration checks type names against it, the
database layer creates columns and writes COPY text with it, the sync layer turns
records into cells with it. It imports nothing from syncd but itself.
"""
