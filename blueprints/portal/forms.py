"""The portal's forms (Flask-WTF): each carries its CSRF token and labels its fields."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField, TelField
from wtforms.fields.choices import SelectChoice

from repositories.providers import Role

PERSON_ROLES = [
    SelectChoice(Role.STAFF.value, "Staff"),
    SelectChoice(Role.ADMIN.value, "Administrator"),
]


class LinkSignInForm(FlaskForm):
    secret = PasswordField("Sign-in link or code")


class TokenSignInForm(FlaskForm):
    token = PasswordField("Your API token")


class IapSignInForm(FlaskForm):
    pass


class SignOutForm(FlaskForm):
    pass


class InviteForm(FlaskForm):
    phone = TelField("Patient's WhatsApp number (international format)")


class CreateAccountForm(FlaskForm):
    email = EmailField("Email")
    name = StringField("Display name")
    role = SelectField("Role", choices=PERSON_ROLES)


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=PERSON_ROLES)


class ConfirmForm(FlaskForm):
    """A button that changes something and needs nothing typed (revoke, a new link)."""
