"""Forms of the HTML pages. They check the input's shape; chat.services does the writes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib.auth import get_user_model

if TYPE_CHECKING:
    from django.contrib.auth.models import User

_SEPARATORS = re.compile(r"[\s,;]+")


def _users_by_username(names: list[str]) -> tuple[list[User], list[str]]:
    """(users found, names with no account), matching usernames case-insensitively."""
    model = get_user_model()
    found: list[User] = []
    missing: list[str] = []
    for name in names:
        user = model._default_manager.filter(username__iexact=name, is_active=True).first()
        if user is None:
            missing.append(name)
        elif user not in found:
            found.append(user)
    return found, missing


class RoomCreateForm(forms.Form):
    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    slug = forms.CharField(
        label="Address",
        max_length=64,
        required=False,
        help_text="Optional: the room's address in /rooms/&lt;address&gt;/. Leave empty to derive it from the name.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    private = forms.BooleanField(required=False, help_text="Only members can see and join a private room.")
    members = forms.CharField(
        required=False,
        max_length=2000,
        help_text="Private rooms only: usernames of the other members, separated by commas or spaces.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    def clean_members(self) -> list[User]:
        raw = self.cleaned_data.get("members") or ""
        names = [n for n in _SEPARATORS.split(raw) if n]
        users, missing = _users_by_username(names)
        if missing:
            listed = ", ".join(repr(n) for n in missing)
            raise forms.ValidationError(f"No active account is named {listed}. Check the spelling, or remove them.")
        return users

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("members") and not cleaned.get("private"):
            self.add_error("members", "Only private rooms have members: tick Private, or leave this field empty.")
        return cleaned


class MemberAddForm(forms.Form):
    username = forms.CharField(
        max_length=150, widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"})
    )

    def clean_username(self) -> User:
        name = self.cleaned_data["username"].strip()
        users, _ = _users_by_username([name])
        if not users:
            raise forms.ValidationError(f"No active account is named {name!r}. Check the spelling.")
        return users[0]


class SignupForm(forms.Form):
    username = forms.CharField(
        max_length=150,
        help_text="Up to 150 characters: letters, digits and @ . + - _ only.",
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True, "spellcheck": "false"}),
    )
    password = forms.CharField(
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters, not entirely numeric, not a common password.",
    )
    password_confirm = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        password, confirm = cleaned.get("password"), cleaned.get("password_confirm")
        if password and confirm and password != confirm:
            self.add_error("password_confirm", "The two passwords differ: type the same password twice.")
        return cleaned
