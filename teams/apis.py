"""REST endpoints: API tokens (password exchange, list, create, revoke), the user's teams, and
membership management by team admins."""

from django.contrib.auth import authenticate, get_user_model
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import paginated_response
from core.errors import ApplicationError, NotFoundError
from core.schema import error_response
from core.throttling import throttle_count
from teams.login_throttle import blocked_message, client_ip, login_retry_after
from teams.models import ApiToken, Membership
from teams.selectors import api_token_get, api_token_list, membership_get, membership_require_role
from teams.services import api_token_create, api_token_exchange, api_token_revoke, membership_set


class InvalidCredentials(ApplicationError):
    status_code = 401
    code = "invalid_credentials"


class TooManyAttempts(exceptions.APIException):
    """429 in the error envelope (code too_many_attempts) with Retry-After: the login throttle refused."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "too_many_attempts"

    def __init__(self, *, seconds: int) -> None:
        super().__init__(blocked_message(seconds))
        self.wait = seconds  # DRF's handler turns `wait` into the Retry-After header


class TokenApi(APIView):
    """POST username + password, get {"token": ...} for the Authorization header.

    Each call creates a new token named "password exchange" that expires after
    MODELHUB_EXCHANGED_TOKEN_DAYS days. Failed attempts are throttled per username and address.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)

        class Meta:
            ref_name = "TokenExchange"  # the schema component's name: "TokenExchangeRequest"

    @extend_schema(
        request=InputSerializer,
        examples=[OpenApiExample("Exchange", value={"username": "ci-bot", "password": "..."}, request_only=True)],
        responses={
            200: inline_serializer(
                "Token", {"token": serializers.CharField(), "expires_at": serializers.DateTimeField(allow_null=True)}
            ),
            401: error_response("Wrong username or password (code invalid_credentials)."),
            429: error_response(
                "Too many failed attempts for this username or from this address in the last minute (code "
                "too_many_attempts), even with the right password; or too many tokens made for this user "
                "(code throttled, MODELHUB_THROTTLE_TOKENS): wait Retry-After seconds."
            ),
        },
        description=(
            "Each call creates a token named 'password exchange' that expires after "
            "MODELHUB_EXCHANGED_TOKEN_DAYS days. After MODELHUB_LOGIN_FAILURES_PER_MINUTE failures in a "
            "minute for the username or from the address: 429, code too_many_attempts, with Retry-After."
        ),
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        seconds = login_retry_after(username=username, ip=client_ip(request))
        if seconds is not None:  # refused before the password is checked
            raise TooManyAttempts(seconds=seconds)
        user = authenticate(request, username=username, password=data.validated_data["password"])
        if user is None:
            raise InvalidCredentials(
                "Wrong username or password. Check both, or ask a team admin to reset your "
                "password (manage.py create_user USERNAME --team T --password NEW)."
            )
        throttle_count(request, scope="tokens", user=user)
        token, key = api_token_exchange(user=user)
        return Response({"token": key, "expires_at": token.expires_at})


class ApiTokenOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's first characters (the key itself is never shown again).")
    status = serializers.CharField(help_text="active, expired or revoked (ApiToken.Status).")
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class ApiTokenCreatedSerializer(ApiTokenOutputSerializer):
    key = serializers.CharField(help_text="The key, shown this once: it is stored hashed.")


class ApiTokenListCreateApi(APIView):
    """GET: your API tokens (never their keys). POST {name, expires_in_days?}: a new token, key shown once.

    A token made with a token expires no later than that token, and is revoked with it.
    """

    throttle_scope = "tokens"  # POST counted per user: settings.MODELHUB_THROTTLE_RATES

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=ApiToken.NAME_MAX_LENGTH)
        expires_in_days = serializers.IntegerField(
            required=False, allow_null=True, min_value=1, max_value=ApiToken.MAX_EXPIRY_DAYS
        )

        class Meta:
            ref_name = "ApiTokenCreate"

    @extend_schema(responses=ApiTokenOutputSerializer(many=True))
    def get(self, request):
        return paginated_response(request, api_token_list(user=request.user), ApiTokenOutputSerializer, view=self)

    @extend_schema(
        request=InputSerializer,
        responses={201: ApiTokenCreatedSerializer},
        examples=[OpenApiExample("For CI", value={"name": "ci", "expires_in_days": 90}, request_only=True)],
        description=(
            "Create a token; its key is shown once. A request authenticated by a token makes a token that "
            "expires no later than that one (without expires_in_days, at the same moment; a token that never "
            "expires makes tokens as asked), and revoking that token revokes the new one too. From a "
            "dashboard session, the token expires as asked."
        ),
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, key = api_token_create(
            user=request.user,
            name=data.validated_data["name"],
            expires_in_days=data.validated_data.get("expires_in_days"),
            parent=request.auth if isinstance(request.auth, ApiToken) else None,
        )
        return Response({**ApiTokenOutputSerializer(token).data, "key": key}, status=status.HTTP_201_CREATED)


class ApiTokenDetailApi(APIView):
    """DELETE: revoke one of your tokens, and every token made with it (204; another user's token is 404)."""

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        api_token_revoke(token=api_token_get(user=request.user, pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class MembershipOutputSerializer(serializers.Serializer):
    username = serializers.CharField(source="user.username")
    role = serializers.CharField()
    created_at = serializers.DateTimeField()


class TeamListApi(APIView):
    """The teams you belong to, with your role in each."""

    class OutputSerializer(serializers.Serializer):
        slug = serializers.CharField(source="team.slug")
        name = serializers.CharField(source="team.name")
        role = serializers.CharField()

        class Meta:
            ref_name = "TeamMembership"

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request):
        memberships = Membership.objects.filter(user=request.user).select_related("team").order_by("team__slug")
        return paginated_response(request, memberships, self.OutputSerializer, view=self)


class TeamMembersApi(APIView):
    """GET: the team's members (any member). POST {username, role}: add or change (admins)."""

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        role = serializers.ChoiceField(choices=Membership.Role.values)

        class Meta:
            ref_name = "TeamMember"

    @extend_schema(responses=MembershipOutputSerializer(many=True))
    def get(self, request, slug: str):
        team = membership_get(user=request.user, team_slug=slug).team
        members = team.memberships.select_related("user").order_by("user__username")
        return paginated_response(request, members, MembershipOutputSerializer, view=self)

    @extend_schema(
        request=InputSerializer,
        examples=[OpenApiExample("Add a member", value={"username": "ci-bot", "role": "member"}, request_only=True)],
        responses={
            201: MembershipOutputSerializer,
            403: error_response("Only the team's admins manage membership."),
            404: error_response("No user with that username."),
        },
    )
    def post(self, request, slug: str):
        team = membership_get(user=request.user, team_slug=slug).team
        membership_require_role(user=request.user, team=team, role=Membership.Role.ADMIN)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = get_user_model().objects.filter(username=data.validated_data["username"]).first()
        if user is None:
            raise NotFoundError(
                f"No user named {data.validated_data['username']!r}. Create it first with manage.py create_user."
            )
        membership = membership_set(user=user, team=team, role=data.validated_data["role"])
        return Response(MembershipOutputSerializer(membership).data, status=status.HTTP_201_CREATED)
