"""The command-line interface: a thin layer that parses arguments and calls the library."""
