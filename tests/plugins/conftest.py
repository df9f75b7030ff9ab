# The example plugin is loaded only in the fresh interpreter of its test: imported here (for
# doctests), its registrations would stay in every later test's registries.
collect_ignore = ["example_plugin.py"]
