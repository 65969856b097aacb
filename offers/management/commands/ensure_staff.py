from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

PASSWORD_FILE = Path(settings.BASE_DIR) / ".admin-password"


class Command(BaseCommand):
    help = "Make sure a staff user exists and print how to log in (idempotent)."

    def handle(self, *_args: Any, **_options: Any) -> None:
        User = get_user_model()
        if not User.objects.filter(is_staff=True, is_active=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "", password)
            PASSWORD_FILE.write_text(password + "\n")
            os.chmod(PASSWORD_FILE, 0o600)
            self.stdout.write(f"Created staff user 'admin' with password {password}")
            self.stdout.write(f"(also saved in {PASSWORD_FILE.name})")
        elif (saved := self.saved_password("admin")) is not None:
            self.stdout.write(
                f"Log in as 'admin' with password {saved} (from {PASSWORD_FILE.name})"
            )
        else:
            names = ", ".join(
                User.objects.filter(is_staff=True).values_list("username", flat=True)[:5]
            )
            self.stdout.write(
                f"Log in as a staff user ({names}); "
                "`python manage.py changepassword NAME` sets a new password."
            )

    def saved_password(self, username: str) -> str | None:
        """The password file's password, if it is this database's user's (the file may have been
        written for another database, or the password changed since)."""
        if not PASSWORD_FILE.exists():
            return None
        password = PASSWORD_FILE.read_text().strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        return password if user is not None and user.check_password(password) else None
