"""The portal's forms (Flask-WTF): each carries its CSRF token and labels its fields."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, RadioField, SelectField, StringField, TelField
from wtforms.fields.choices import SelectChoice

from repositories.providers import Role
from service.portal.exports import format_choices

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


class ExportForm(FlaskForm):
    """An export: its format and, optionally, the first and last day (UTC) it covers."""

    format = RadioField(
        "Format",
        choices=[SelectChoice(choice.value, choice.label) for choice in format_choices()],
        default=format_choices()[0].value,
    )
    # Typed as date inputs; the export's own parser checks them and says what is wrong.
    date_from = StringField("From (first day, UTC)", render_kw={"type": "date"})
    date_to = StringField("To (last day, UTC)", render_kw={"type": "date"})
