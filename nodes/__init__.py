"""Modules shipped with zdse (installed as ``zdse_nodes``), found through ``zdse.modules``."""
