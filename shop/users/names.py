"""Usernames people cannot be fooled by: one account per name as people read it, no mixed-script look-alikes."""

from __future__ import annotations

import unicodedata

import marshmallow as ma
from confusable_homoglyphs import confusables


def username_key(username: str) -> str:
    """What makes two usernames the same account name: NFKC, then case folding (fullwidth and capital
    letters are the plain ones)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


def refuse_look_alike(username: str) -> None:
    """Refuse a username mixing scripts with characters confusable with another script's (Unicode TR39):
    a Cyrillic letter among Latin ones that looks like a Latin one. Whole-script names (`Пётр`, `alice`) pass."""
    if confusables.is_dangerous(username):
        raise ma.ValidationError("The username mixes scripts with look-alike characters; use one script.")
