"""Delivering outbox rows: batch/sweeper → claims/sending/recording/follow_ups → scheduling → types."""
