"""In-process signals for product code that reacts to status changes without HTTP.

`message_status_changed` is sent by the receipts and delivery code after a message's status
moved (and after its row was saved), with keyword arguments:

- `sender`: `shared.models.Message` (the class)
- `message`: the `Message` instance, already carrying `new_status`
- `old_status`, `new_status`: `MessageStatus` values (`sent`, `delivered`, `read`,
  `undelivered`, `bounced`, `failed`, ...)

Receivers run synchronously inside the sender's transaction: keep them short, never call a
provider or an HTTP endpoint from one (hand work to the outbox instead), and use
`transaction.on_commit` for anything that must only happen once the change is committed.
An exception in a receiver propagates to the sender (Django's `send`), so use `send_robust`
where a broken receiver must not stop delivery.

    from django.dispatch import receiver
    from shared.events.signals import message_status_changed

    @receiver(message_status_changed)
    def on_status(sender, message, old_status, new_status, **kwargs):
        ...
"""

from __future__ import annotations

from django.dispatch import Signal

message_status_changed = Signal()
