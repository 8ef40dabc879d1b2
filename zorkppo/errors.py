"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user (params, files, environment). Printed as one line, exit code 2."""


def exit_on_user_error(main: Callable[..., object]) -> Callable[..., object]:
    """Decorate a stage's main(): a UserError becomes `error: <message>` on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
