"""Provider receipts (delivery status callbacks) in: verified, recorded, applied forward only.

Each provider module verifies its own signature scheme and turns a request into `Receipt`s
(twilio.py, sendgrid.py, meta.py); `apply.record_receipts` stores them as MessageEvent rows and
moves message statuses forward. Telegram has no delivery receipts: `sent` is final there.
"""
