"""Refuse to start a deployment whose secrets are still placeholders.

Run once before the other services (the compose stack's ``secrets-check`` service):
``python -m parking_ml.secrets_check VAR [VAR ...]`` exits 1 naming every variable that is unset, a known
placeholder or shorter than ``MIN_SECRET_LENGTH``, unless ``PARKING_ALLOW_PLACEHOLDER_SECRETS=true`` (the
documented flag for a throw-away local stack). It prints names only, never values.
It reads the environment itself rather than ``Settings``: it checks variables of other programs (PostgreSQL,
MinIO, Grafana), and ``Settings()`` would itself refuse to build from the placeholders it is here to name.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

from parking_ml.config import PLACEHOLDER_SECRETS

MIN_SECRET_LENGTH = 12
DEV_FLAG = "PARKING_ALLOW_PLACEHOLDER_SECRETS"
# values shipped in .env.example beyond the shared list: a copy of the example must not pass
EXAMPLE_MARKERS = ("changeme", "change-me", "replace-me", "placeholder")


def weak_secrets(env: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """Map each weak variable in ``names`` to why it is refused (unset, placeholder, too short)."""
    weak: dict[str, str] = {}
    for name in names:
        value = env.get(name)
        if value is None or not value.strip():
            weak[name] = "unset"
        elif value.strip().lower() in PLACEHOLDER_SECRETS or any(m in value.lower() for m in EXAMPLE_MARKERS):
            weak[name] = "placeholder"
        elif len(value.strip()) < MIN_SECRET_LENGTH:
            weak[name] = f"shorter than {MIN_SECRET_LENGTH} characters"
    return weak


def dev_flag_set(env: Mapping[str, str]) -> bool:
    return env.get(DEV_FLAG, "").strip().lower() in {"1", "true", "yes"}


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    if not names:
        print("usage: python -m parking_ml.secrets_check VAR [VAR ...]", file=sys.stderr)
        return 2
    weak = weak_secrets(env, names)
    if not weak:
        print(f"secrets-check: {len(names)} secrets set")
        return 0
    listing = ", ".join(f"{name} ({why})" for name, why in weak.items())
    if dev_flag_set(env):
        print(f"secrets-check: WARNING weak secrets allowed by {DEV_FLAG}=true: {listing}")
        return 0
    print(
        f"secrets-check: refusing to start: {listing}. Set real values in .env "
        "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`), "
        f"or {DEV_FLAG}=true for a throw-away local stack",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
