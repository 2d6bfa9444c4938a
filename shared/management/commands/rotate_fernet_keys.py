"""manage.py rotate_fernet_keys: re-encrypt every stored token (and message attachment) under
the first FERNET_KEY."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from shared.services.keys import integration_tokens_rotate, message_attachments_rotate


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
        files = message_attachments_rotate()
        self.stdout.write(
            f"Rotated the attachments of {files.rotated} message(s); "
            f"{files.already_current} already current; {files.failed} could not be decrypted."
        )
        if files.failed:
            self.stderr.write(
                "Some message attachments did not decrypt with any FERNET_KEY: keep their old "
                "key in FERNET_KEY until those messages are sent (ids: "
                + ", ".join(str(pk) for pk in files.failed_ids)
                + ")."
            )
