"""Dashboard forms that belong to no domain app: the account's API tokens."""

from django import forms

from teams.models import ApiToken


class ApiTokenForm(forms.Form):
    """Name and optional lifetime of a new API token (api_token_create checks the same bounds)."""

    name = forms.CharField(
        max_length=ApiToken.NAME_MAX_LENGTH, help_text="What uses it, e.g. 'ci' or 'laptop'; shown in the list."
    )
    expires_in_days = forms.IntegerField(
        label="Expires in (days)",
        required=False,
        min_value=1,
        max_value=ApiToken.MAX_EXPIRY_DAYS,
        help_text="Leave empty for a token that never expires.",
    )
