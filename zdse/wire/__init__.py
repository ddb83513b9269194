"""The wire: what nodes and cages say to each other, and the sockets they say it on."""
