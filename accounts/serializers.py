"""API shapes for accounts."""
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from config.api_input import JsonInput

from .models import ApiToken


class UserSerializer(serializers.ModelSerializer):
    # Optional on an account: "" when there is none (so not documented as format: email).
    email = serializers.CharField(read_only=True)

    class Meta:
        model = get_user_model()
        fields = [
            "id",
            "username",
            "email",
            "display_name",
            "is_staff",
            "daily_image_quota",
            "max_concurrent_tasks",
            "date_joined",
        ]
        read_only_fields = fields


class TokenIssuedSerializer(serializers.Serializer):
    """What login and register answer (promised: token, expiry, user)."""

    token = serializers.CharField(help_text=_("The token in clear text. Shown only now; Easel keeps only a hash."))
    expiry = serializers.DateTimeField(allow_null=True)
    user = UserSerializer()


class ApiTokenSerializer(serializers.ModelSerializer):
    """A token's metadata; never the token itself."""

    name = serializers.CharField(source="label", help_text=_("Its name, or what made it (sign-in, sign-up)."))
    kind = serializers.ChoiceField(
        choices=ApiToken.Kind.choices,
        help_text=_("sign-in and sign-up tokens are retired oldest first when the per-user limit is reached; "
                    "personal ones never are."),
    )
    current = serializers.SerializerMethodField(help_text=_("Whether this request was made with this token."))

    class Meta:
        model = ApiToken
        fields = ["token_key", "name", "kind", "created", "expiry", "current"]
        read_only_fields = fields

    def get_current(self, token) -> bool:
        request = self.context.get("request")
        auth = getattr(request, "auth", None)
        return isinstance(auth, ApiToken) and auth.pk == token.pk


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(help_text=_("The token in clear text. Shown only now; Easel keeps only a hash."))

    class Meta(ApiTokenSerializer.Meta):
        fields = ["token", *ApiTokenSerializer.Meta.fields]
        read_only_fields = fields


class ApiTokenCreateInput(JsonInput):
    name = serializers.CharField(max_length=100, help_text=_("What the token is for, e.g. \"my laptop script\"."))
    expires_in_days = serializers.IntegerField(
        min_value=1,
        max_value=settings.EASEL_TOKEN_MAX_DAYS,
        required=False,
        allow_null=True,
        help_text=_("Lifetime in days (1..365); null or absent: the default lifetime (EASEL_TOKEN_TTL_HOURS)."),
    )
