"""The configuration file. `model` is what the rest of syncd sees: typed, immutable
dataclasses. `loader` turns a file into them: `yaml_tree` reads YAML into nodes that
keep their line (within limits on size, nesting and aliases), `tree_reader` and
`value_readers` read typed values from nodes and collect every problem as
`FILE:LINE: key.path: message`, `source_section` and `entity_section` read those two
sections, `values` parses durations, sizes, timestamps and zones (the command line
uses it too), `secrets` reads `*_file` and environment secrets, `http_paths` names
the paths syncd serves itself."""
