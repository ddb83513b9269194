"""The public API: what ``from zdse import ...`` offers."""

from __future__ import annotations

import zdse
from zdse import errors


def test_every_error_a_client_can_meet_is_exported() -> None:
    """Each error of the tree but the cage's own SupervisorError comes from ``zdse``,
    and __all__ is sorted and names only what the package holds."""
    public = {name for name in errors.__all__ if name != "SupervisorError"}
    assert public <= set(zdse.__all__)
    assert {"MessageTooLarge", "RegistrationError"} <= set(zdse.__all__)
    assert zdse.MessageTooLarge is errors.MessageTooLarge
    assert zdse.__all__ == sorted(zdse.__all__)
    assert all(hasattr(zdse, name) for name in zdse.__all__)
