"""The cage's supervision of node processes: a pure core and its process shell."""
