"""manage.py rotate_fernet_keys: re-encrypt every stored token under the first FERNET_KEY."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from shared.services.keys import integration_tokens_rotate


class Command(BaseCommand):
    help = "Re-encrypt every stored provider token with the first FERNET_KEY (safe while serving)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = integration_tokens_rotate()
        self.stdout.write(
            f"Rotated {result.rotated} token(s); {result.already_current} already current; "
            f"{result.failed} could not be decrypted."
        )
        if result.failed:
            self.stderr.write(
                "Some tokens did not decrypt with any FERNET_KEY: keep their old key in FERNET_KEY "
                "or reconnect those integrations (ids: "
                + ", ".join(str(pk) for pk in result.failed_ids)
                + ")."
            )
