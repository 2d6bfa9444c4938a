"""Key rotation for stored tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from shared.crypto import TokenDecryptionError, is_current, rotate_ciphertext
from shared.models import Integration


@dataclass
class RotationResult:
    rotated: int = 0
    already_current: int = 0
    failed_ids: list[int] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failed_ids)


def integration_tokens_rotate(*, batch_size: int = 200) -> RotationResult:
    """Re-encrypt each stored token under the first key, one row lock at a time.

    Each row is locked, re-read and rewritten in its own short transaction, so a connect or
    disconnect running at the same moment is never overwritten with a stale token.
    """
    result = RotationResult()
    ids = list(
        Integration.objects.exclude(token_encrypted="").order_by("pk").values_list("pk", flat=True)
    )
    for start in range(0, len(ids), batch_size):
        for pk in ids[start : start + batch_size]:
            with transaction.atomic():
                row = (
                    Integration.objects.select_for_update()
                    .filter(pk=pk)
                    .values_list("token_encrypted", flat=True)
                    .first()
                )
                if not row:
                    continue
                if is_current(row):
                    result.already_current += 1
                    continue
                try:
                    new = rotate_ciphertext(row)
                except TokenDecryptionError:
                    result.failed_ids.append(pk)
                    continue
                Integration.objects.filter(pk=pk).update(token_encrypted=new)
                result.rotated += 1
    return result
