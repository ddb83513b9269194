"""A node: its pure protocol core, the asyncio Bus around it, and the Service API on top."""
