"""REST endpoints: API tokens, the user's teams, and membership management by team admins."""

from django.contrib.auth import authenticate, get_user_model
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from modelhub.core.api import paginated_response
from modelhub.core.errors import ApplicationError, NotFoundError
from modelhub.teams.models import Membership
from modelhub.teams.selectors import membership_get, membership_require_role
from modelhub.teams.services import membership_set, token_for_user


class InvalidCredentials(ApplicationError):
    status_code = 401
    code = "invalid_credentials"


class TokenApi(APIView):
    """POST username + password, get {"token": ...} for the Authorization header."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"})

    @extend_schema(
        request=InputSerializer,
        responses={200: inline_serializer("Token", {"token": serializers.CharField()})},
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request, **data.validated_data)
        if user is None:
            raise InvalidCredentials(
                "Wrong username or password. Check both, or ask a team admin to reset your "
                "password (manage.py create_user USERNAME --team T --password NEW)."
            )
        return Response({"token": token_for_user(user=user)})


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

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request):
        memberships = Membership.objects.filter(user=request.user).select_related("team").order_by("team__slug")
        return paginated_response(request, memberships, self.OutputSerializer, view=self)


class TeamMembersApi(APIView):
    """GET: the team's members (any member). POST {username, role}: add or change (admins)."""

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        role = serializers.ChoiceField(choices=Membership.Role.values)

    @extend_schema(responses=MembershipOutputSerializer(many=True))
    def get(self, request, slug: str):
        team = membership_get(user=request.user, team_slug=slug).team
        members = team.memberships.select_related("user").order_by("user__username")
        return paginated_response(request, members, MembershipOutputSerializer, view=self)

    @extend_schema(request=InputSerializer, responses={201: MembershipOutputSerializer})
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
