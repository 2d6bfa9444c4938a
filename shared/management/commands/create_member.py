"""manage.py create_member: create (what is missing of) an org, a user, a membership and a token."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils.text import slugify
from rest_framework.authtoken.models import Token

from shared.models import Membership, Organization, Role


class Command(BaseCommand):
    help = "Create an organization member (and whatever is missing) and print it as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--username", required=True)
        parser.add_argument("--role", choices=Role.values, default=Role.MEMBER)

    @transaction.atomic
    def handle(self, *args: Any, org: str, username: str, role: str, **options: Any) -> None:
        slug = slugify(org)
        organization, _ = Organization.objects.get_or_create(slug=slug, defaults={"name": org})
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        membership, _ = Membership.objects.get_or_create(
            user=user, organization=organization, defaults={"role": role}
        )
        if membership.role != role:
            membership.role = role
            membership.save(update_fields=["role"])
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(
            json.dumps(
                {
                    "org_id": organization.pk,
                    "org": organization.slug,
                    "username": user.get_username(),
                    "role": membership.role,
                    "token": token.key,
                }
            )
        )
