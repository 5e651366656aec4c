"""One module per ``neurolens`` command: ``add_parser(sub)`` adds its sub-parser (flags and
``func``), ``cmd_<name>(args) -> exit code`` runs it."""
